"""Translators between protos and engine types, one module per area.

Servicers import translators from here, never from each other; the engine never imports them.
"""
