#!/usr/bin/env python3
"""pellucid end to end on the embedded server, using only the public SDK.

Run with `make demo`. State lives in $PELLUCID_HOME (default ~/.pellucid); the demo
can be run again and again.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pellucid
from pellucid.api.v1 import Data, Image, Input, Text
from pellucid.client.app import App
from pellucid.client.user import User
from pellucid.deployment import Deployment, InvalidRows
from pellucid.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PartialFailure,
    Unavailable,
)
from pellucid.server.engine.media import encode_png

ROOT = Path(__file__).resolve().parent.parent
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 210)}


def make_image_folder(folder: Path, per_label: int = 12) -> Path:
    """A small labelled image set: noisy 32x32 squares, one folder per colour."""
    for label, (r, g, b) in COLOURS.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            noise = hashlib.shake_128(f"{label}{i}".encode()).digest(32 * 32 * 3)
            pixels = bytes(min(255, base + n % 40) for j, n in enumerate(noise) for base in ((r, g, b)[j % 3],))
            (folder / label / f"{label}_{i:02d}.png").write_bytes(encode_png(32, 32, pixels))
    (folder / "red" / "broken.png").write_bytes(b"this is not a picture")  # fails alone, with its reason
    return folder


APP_ID = "demo"
# the embedded server serves HTTP too (on a port the OS picks): the demo calls a deployment over it
os.environ.setdefault("PELLUCID_SERVER_HTTP_PORT", "0")


def step(text: str) -> None:
    print(f"\n== {text}")


def describe(output) -> str:  # type: ignore[no-untyped-def]
    return ", ".join(f"{c.id} {c.value:.2f}" for c in output.data.concepts)


def deploy_and_call(app: App, work: Path) -> None:
    """The colour model behind a URL and a token: rows of named features over plain HTTP."""
    step("deploy the model behind a URL and call it over HTTP (pellucid.deployment)")
    deployment = app.create_deployment(
        "demo-colour",
        model_id="colour",
        feature_specs={
            "input": [
                {"name": "Picture", "type": "image", "required": False},
                {"name": "Review", "type": "text", "required": False},
            ],
            "output": [
                {"name": "Colour", "type": "categorical", "categories": list(COLOURS)},
                {"name": "Sentiment", "type": "categorical", "categories": ["positive", "negative"]},
            ],
        },
        exist_ok=True,
    )
    if not deployment.url:
        print("the server has no HTTP port (start it with --http-port): skipped")
        return
    _, token = deployment.create_token("demo")
    print(f"deployment {deployment.id!r} at {deployment.url}, with a token that can call nothing else")
    picture = next((work / "images" / "green").glob("*.png"))
    with Deployment(url=deployment.url, token=token) as client:
        print(f"inputs: {[(s['name'], s['type']) for s in client.feature_specs_in]}")
        answer = client.predict(
            Picture=picture.read_bytes(), Review="Arrived early, the battery lasts all day, would buy again"
        )
        colour = max(answer["Colour"], key=answer["Colour"].get)
        sentiment = max(answer["Sentiment"], key=answer["Sentiment"].get)
        print(f"{picture.name} + a review: colour {colour} {answer['Colour'][colour]:.2f}, sentiment {sentiment}")
        rows = [{"Picture": p.read_bytes()} for p in sorted((work / "images").glob("*/*_0[0-2].png"))]
        colours = [max(out["Colour"], key=out["Colour"].get) for out in client.predict_many(rows, progress=False)]
        print(f"predict_many of {len(rows)} images: {colours}")
        try:
            client.predict(Picture=b"not a picture")
        except InvalidRows as exc:
            print(
                f"{type(exc).__name__} (HTTP {exc.status}): row {exc.row}, feature {exc.feature!r}: {exc.rows[0]['message']}"
            )


def main() -> int:
    """The demo, its local files (images, exports) in a temporary directory removed at the end."""
    with tempfile.TemporaryDirectory(prefix="pellucid-demo-") as work:
        return demo(Path(work))


def demo(work: Path) -> int:
    started = time.perf_counter()
    user = User()  # no configuration: the embedded `local` target and its first user
    step(f"connected to {user.base_url} as {user.get_user_info().id!r}")

    step("start from a clean slate (and handle the error if there is nothing to delete)")
    try:
        user.delete_app(APP_ID)
        print(f"deleted the app {APP_ID!r} left by an earlier run")
    except NotFound as exc:
        print(f"nothing to delete: {exc.code.name}: {exc.message}")

    step("create an app that embeds its texts and images as they arrive (searchable)")
    app = user.create_app(
        APP_ID,
        base_workflow="Universal",
        name="Demo app",
        description="made by scripts/demo.py",
        metadata={"source": "demo"},
    )
    print(f"created {app!r}: name={app.app_info.name!r} metadata={dict(app.app_info.metadata)}")

    step("create concepts")
    animals = [
        "cat",
        "dog",
        "bird",
        "fish",
        "horse",
        "cow",
        "sheep",
        "goat",
        "duck",
        "frog",
        "bear",
        "wolf",
        "fox",
        "deer",
        "owl",
        "bee",
        "ant",
        "crab",
        "seal",
        "lion",
    ]
    created = app.create_concepts(animals, labels=[a.title() for a in animals])
    print(f"created {len(created)} concepts")

    step("list them with paging")
    first = [c.id for c in app.list_concepts(page_no=1, per_page=8)]
    second = [c.id for c in app.list_concepts(page_no=2, per_page=8)]
    print(f"page 1 (8 per page): {first}")
    print(f"page 2 (8 per page): {second}")
    everything = [c.id for c in app.list_concepts(per_page=6)]
    print(f"all {len(everything)}, fetched 6 per request by page token: {everything}")

    step("errors are typed and say what to fix")
    try:
        user.create_app("not a valid id!")
    except InvalidArgument as exc:
        print(f"{type(exc).__name__}: {exc.message} [field={exc.details.get('field')}]")
    try:
        app.create_concepts(["zebra", "cat", "bad label!"])
    except PartialFailure as exc:
        print(f"{exc}")
        print(f"  stored anyway: {[c.id for c in exc.succeeded]}")

    step("ingest a labelled image folder (label = folder name)")
    images = app.create_dataset("colours", description="noisy colour squares")
    result = images.upload_from_folder(str(make_image_folder(work / "images")), input_type="image", labels=True)
    print(f"upload result: {result}")
    for failure in result.failed:
        print(f"  failed: {Path(failure.source).name}: {failure.reason}")
    again = images.upload_from_folder(str(work / "images"), input_type="image", labels=True, progress=False)
    print(f"the same upload again: {again}  (ids come from the content: nothing is stored twice)")

    step("ingest a CSV of texts (examples/data/reviews.csv)")
    reviews = app.create_dataset("reviews")
    result = reviews.upload_from_csv(str(ROOT / "examples" / "data" / "reviews.csv"), input_type="text", labels=True)
    print(f"upload result: {result}")

    step("list a dataset")
    for item in reviews.list_inputs(page_no=1, per_page=4):
        labels = ",".join(c.id for c in item.data.concepts) or "-"
        print(f"- {item.id[:12]}.. [{labels:8}] {item.data.text.raw[:50]}")
    stats = images.get_stats()
    print(f"colours: {stats.inputs} inputs, concepts {dict(stats.concept_counts)}")

    step("search: by meaning (text), by example (image), within filters")
    status = app.wait_until_indexed(timeout=600, show_progress=False)
    print(
        f"embedded by {status.base_workflow} ({', '.join(status.embedded_input_types)}): "
        f"{status.ready} ready, {status.failed} failed, {status.pending + status.in_progress} waiting"
    )
    search = app.search(top_k=3)
    query = "it broke almost at once"
    print(f"texts closest to {query!r}:")
    for hit in search.query(ranks=[{"text_raw": query}], filters=[{"input_types": ["text"]}]):
        print(f"  {hit.score:.3f} {hit.input.data.text.raw}")
    example = next((work / "images" / "blue").glob("*.png"))
    print(f"images closest to {example.name} (a blue square), among those not labelled red:")
    for hit in search.query(
        ranks=[{"image_bytes": example.read_bytes()}],
        filters=[{"input_types": ["image"]}, {"concepts": [{"id": "red", "value": 1}], "negate": True}],
    ):
        print(f"  {hit.score:.3f} {hit.id[:12]}.. labelled {','.join(c.id for c in hit.input.data.concepts)}")
    print(
        f"positive reviews about phones: {search.count(filters=[{'concepts': [{'id': 'positive'}], 'metadata': {'product': 'phone'}}])}"
    )

    step("freeze a version and export it")
    version = images.create_version(description="demo snapshot")
    print(f"version {version.id}: {version.stats.inputs} inputs")
    export_path = images.export(str(work / "colours.zip"), split="train", version_id=version.id)
    print(f"exported to {export_path} ({export_path.stat().st_size:,} bytes)")

    step("serve a model from a runner process (examples/runners/colour_model.py)")
    model = app.create_model("colour", runner_labels=["demo"], input_fields=["image", "text"], concepts=list(COLOURS))
    try:
        user.create_runner("demo-runner", labels=["demo"], description="the demo's example runner")
    except AlreadyExists:
        pass
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pellucid.cli",
            "runner",
            "start",
            str(ROOT / "examples" / "runners" / "colour_model.py") + ":ColourModel",
            "--runner-id",
            "demo-runner",
            "--concurrency",
            "2",
        ],
        env={**os.environ, "PELLUCID_API": user.base_url},
    )
    try:
        deadline = time.monotonic() + 60
        while user.runner("demo-runner").connections == 0:
            if time.monotonic() > deadline or runner.poll() is not None:
                raise SystemExit("the example runner did not connect; see its output above")
            time.sleep(0.1)
        picture = next((work / "images" / "green").glob("*.png"))
        by_bytes = model.predict_by_bytes(picture.read_bytes(), "image")
        print(f"by bytes ({picture.name}): {describe(by_bytes.outputs[0])} [runner {by_bytes.runner_id}]")
        by_file = model.predict_by_filepath(
            str(next((work / "images" / "blue").glob("*.png"))), "image", output_config={"max_concepts": 1}
        )
        print(f"by file, top concept only: {describe(by_file.outputs[0])}")
        batch = [
            Input(id=f"img{i}", data=Data(image=Image(base64=p.read_bytes())))
            for i, p in enumerate(sorted((work / "images" / "red").glob("red_0[0-3].png")))
        ]
        batch.append(Input(id="a-review", data=Data(text=Text(raw="Stopped working after a week, very disappointing"))))
        batch.append(Input(id="corrupt", data=Data(image=Image(base64=b"\x89PNG but broken"))))
        response = model.predict(batch)
        print(f"a batch of {len(batch)} (one request; each input has its own status):")
        for output in response.outputs:
            status = "ok" if output.status.code == 0 else output.status.message
            print(
                f"  {output.input.id:13} {describe(output) if output.status.code == 0 else '':32} {status if output.status.code else ''}"
            )
        step("the same model as an algorithm, called in one line (pellucid.client)")
        model.publish_algorithm(version="1.0.0")
        algo = pellucid.client().algo(f"{user.user_id}/colour/1.0.0")
        answer = algo.pipe("Stopped working after a week, very disappointing")
        top = max(answer.result["concepts"], key=lambda c: c["value"])
        print(f"algorithm {user.user_id}/colour/1.0.0: {top['id']} {top['value']:.2f} ({answer.metadata.content_type})")
        deploy_and_call(app, work)

        step("hosted data: a file in data://, read by the algorithm (pellucid.client().file(...).put)")
        client = pellucid.client()
        inbox = client.dir("data://.my/demo-inbox")
        if not inbox.exists():
            inbox.create()  # ACL my_algos: you and your algorithms read it
        review = client.file("data://.my/demo-inbox/review.txt").put("Works great, I love it, highly recommend")
        answer = algo.pipe(review.path)
        top = max(answer.result["concepts"], key=lambda c: c["value"])
        print(f"algorithm on {review.path} ({review.size} bytes): {top['id']} {top['value']:.2f}")
    finally:
        runner.send_signal(signal.SIGTERM)  # it finishes what it holds, then exits
        print(f"runner stopped (exit code {runner.wait(timeout=30)})")

    step("and with no runner, the caller learns why")
    try:
        model.with_options(timeout=2).predict_by_bytes(picture.read_bytes(), "image")
    except Unavailable as exc:
        print(f"{type(exc).__name__}: {exc.message}")

    step("train a sentiment classifier on 120 labelled product reviews (a server job; the server serves it)")
    app.create_dataset("product-reviews").upload_from_csv(
        str(ROOT / "examples" / "data" / "product_reviews.csv"), input_type="text", labels=True
    )
    sentiment = app.create_model("sentiment", model_type_id="embedding-classifier")
    sentiment.update_params(dataset_id="product-reviews", concepts=["positive", "negative"])
    version_id = sentiment.train()  # returns at once
    status = sentiment.wait_for_training(version_id)
    print(
        f"version {version_id[:12]}..: {status['state']}, held-out accuracy {status['metrics']['validation_accuracy']:.2f}"
    )

    step("evaluate it on the demo's own reviews (examples/data/reviews.csv: never trained on)")
    metrics = sentiment.evaluate("reviews", wait=True)
    summary = metrics.summary
    print(
        f"top-1 accuracy {summary.top1_accuracy:.2f} against {summary.majority_class_accuracy:.2f} for always "
        f"answering {summary.majority_class!r}; macro precision {summary.macro_avg_precision:.2f}, "
        f"recall {summary.macro_avg_recall:.2f}, F1 {summary.macro_avg_f1_score:.2f}"
    )

    step("a workflow from YAML: the built-in text embedder -> the trained classifier -> a thresholder")
    config = work / "sentiment-workflow.yaml"
    config.write_text(
        f"""workflow:
  id: confident-sentiment
  nodes:
    - id: embed
      model: {{model_id: text-embedder, model_type_id: text-embedder}}
    - id: classify
      model: {{model_id: sentiment, model_version_id: {version_id}}}
      node_inputs: [{{node_id: embed}}]
    - id: confident
      model:
        model_id: confident
        model_type_id: concept-thresholder
        output_info: {{params: {{concept_threshold_type: GREATER_THAN, threshold: 0.7}}}}
      node_inputs: [{{node_id: classify}}]
"""
    )
    workflow = app.create_workflow(str(config), display=False)
    texts = ["Broke on the first day and the seller never replied.", "Sturdy, quiet and a joy to use every day."]
    response = workflow.predict([Input(id=f"text{i}", data=Data(text=Text(raw=t))) for i, t in enumerate(texts)])
    for text, result in zip(texts, response.results, strict=True):
        print(f"{text!r}:")
        for output in result.outputs:  # one per node, in node order, each with its own status
            made = describe(output) if output.data.concepts else f"{len(output.data.embeddings[0].vector)}-d embedding"
            print(f"  {output.id:9} {output.status.code} {made}")
    exported = work / "confident-sentiment.yaml"
    workflow.export(str(exported))
    print(f"exported to {exported.name}: create_workflow reads it back into an equal workflow")

    step("apps of this user")
    for listed in user.list_apps():
        print(f"- {listed.id} ({listed.app_info.name})")

    print(f"\ndemo finished in {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
