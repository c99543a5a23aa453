"""The server's HTTP side (starlette routes served by uvicorn in the server process)."""
