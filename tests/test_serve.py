import base64
import contextlib
import io
import os
import select
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mnist_ops.cli import main
from mnist_ops.predict import Predictor

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
# without these, Chromium on a closed network floods itself with refused connections
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start_server(*args, timeout=60):
    """`mnist-ops serve ... --port 0` in a subprocess; returns (process, base URL) once /healthz answers."""
    process = subprocess.Popen([sys.executable, "-m", "mnist_ops", "serve", *map(str, args), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("serving "), f"server did not start: {line!r} {process.stderr.read() if process.poll() is not None else ''}"
        url = line.split(" on ")[1].split()[0].rstrip("/")
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return process, url
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("server never answered /healthz")
    except BaseException:
        process.kill()
        process.wait(10)
        raise


def stop(process):
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def server(digit_checkpoint):
    process, url = start_server("--checkpoint", digit_checkpoint)
    yield url
    stop(process)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def seven(mnist_test) -> bytes:
    """Test digit 0 (a 7), dark on white, 5x enlarged."""
    return png(Image.fromarray(255 - mnist_test.images[0].numpy()).resize((140, 140), Image.Resampling.BICUBIC))


def test_predict_raw_body_and_multipart_upload(server, seven):
    with httpx.Client(base_url=server, timeout=10) as client:
        raw = client.post("/predict", content=seven, headers={"content-type": "image/png"})
        upload = client.post("/predict", files={"file": ("seven.png", seven, "image/png")})
        assert raw.status_code == upload.status_code == 200
        result = raw.json()
        assert result["digit"] == 7 and result["label"] == "7" and result == upload.json()
        form = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="seven.png"\r\n'
                b"Content-Type: image/png\r\n\r\n" + seven + b"\r\n--XyZ--\r\n")
        mixed_case = client.post("/predict", content=form,  # media types are case-insensitive: once a 415
                                 headers={"content-type": "Multipart/Form-Data; boundary=XyZ"})
        assert mixed_case.status_code == 200 and mixed_case.json() == result, mixed_case.text
        assert len(result["probabilities"]) == 10 and abs(sum(result["probabilities"]) - 1) < 1e-4
        pixels = np.array(result["pixels"])
        assert pixels.shape == (28, 28) and pixels.max() == 255 and pixels[0].max() == 0  # light on black, margins
        assert client.get("/healthz").json() == {"status": "ok", "model": "lean-8k", "backend": "torch"}
        assert "<canvas" in client.get("/").text
        assert [client.head(path).status_code for path in ("/", "/healthz")] == [200, 200]  # `curl -I`, monitors
        assert client.get("/docs").status_code == 200
        assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_a_picture_whose_exif_does_not_parse_is_read_without_it(server, broken_exif_sevens):
    """A PNG's or WebP's unreadable EXIF was a 500 (a review)."""
    with httpx.Client(base_url=server, timeout=10) as client:
        for name, content in broken_exif_sevens.items():
            response = client.post("/predict", content=content)
            assert (response.status_code, response.json()["digit"]) == (200, 7), name


def test_a_file_that_is_not_an_image_is_told_so_and_only_an_encoded_one_how_to_send_it(server, seven):
    """A .txt picked on the draw page was answered with a hint about curl, JSON and base64 it had not used (a
    review); a body sent as JSON, a data URL or base64 text still gets it."""
    with httpx.Client(base_url=server, timeout=10) as client:
        for body in (b"my shopping list: eggs, milk\n", b"%PDF-1.7 not a picture"):
            detail = client.post("/predict", content=body, headers={"content-type": "text/plain"}).json()["detail"]
            assert detail.startswith("upload: not an image") and "curl" not in detail, detail
        for body in (b'{"image": "..."}', b"data:image/png;base64,AAAA", base64.b64encode(seven)):
            response = client.post("/predict", content=body)
            assert response.status_code == 415 and "not JSON or base64" in response.json()["detail"], body[:20]


def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(server, seven, bomb_png, giant_pngs):
    def chunks():  # over 1 MB without a Content-Length: the server must count
        for _ in range(12):
            yield b"\x89PNG" + b"\x00" * 99_996

    blank = png(Image.new("RGB", (300, 300), (255, 255, 255)))
    cases = [
        ({"content": b""}, 400, "empty request body"),
        ({"content": b"%PDF-1.7 not a picture"}, 415, "not an image"),
        ({"content": b"\x89PNG" + b"\x00" * (1024 * 1024)}, 413, "1 MB"),
        ({"content": chunks()}, 413, "1 MB"),
        ({"content": bomb_png, "headers": {"content-type": "image/png"}}, 413, "8192x8192"),
        ({"content": giant_pngs[100_000]}, 413, "10,000,000,000 pixels"),  # past Pillow's own limit
        ({"content": blank}, 422, "no digit found"),
        ({"files": {"note": (None, "just a field")}}, 400, "has no file"),
        ({"files": {"file": ("empty.png", b"", "image/png")}}, 400, "empty uploaded file"),
        ({"content": b"--xyz\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 400,
         "file=@digit.png"),
        ({"json": {"image": base64.b64encode(seven).decode()}}, 415, "not JSON or base64"),  # what it was not told
        ({"content": b"data:image/png;base64," + base64.b64encode(seven)}, 415, "POST the image file as the body"),
    ]
    with httpx.Client(base_url=server, timeout=20) as client:
        for request, status, fragment in cases:
            response = client.post("/predict", **request)
            assert response.status_code == status, (fragment, response.text)
            assert fragment in response.json()["detail"]
            assert client.post("/predict", content=seven).json()["digit"] == 7  # still serving
        wrong_method, no_page = client.get("/predict"), client.get("/predcit")
        assert (wrong_method.status_code, no_page.status_code) == (405, 404)
        assert wrong_method.headers["allow"] == "POST"
        for answer, start in ((wrong_method, "/predict does not take GET; "), (no_page, "no page /predcit; ")):
            assert answer.json()["detail"].startswith(start) and "POST /predict" in answer.json()["detail"]


def test_the_api_description_names_each_operation_once_and_warns_of_nothing(recwarn):
    """GET and HEAD on one route shared an operation id: FastAPI warned of it on every /docs, on the server's stderr
    with its own file and line, and client generators refuse such a description."""
    import asyncio

    from mnist_ops.serve.app import create_app

    class Stub(Predictor):
        backend, model_name, mean, std, labels = "stub", "stub", 0.1307, 0.3081, [str(d) for d in range(10)]

    async def ask():
        transport = httpx.ASGITransport(app=create_app(Stub()))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/openapi.json"), await client.head("/"), await client.head("/healthz")

    description, *heads = asyncio.run(ask())
    operations = [operation["operationId"] for path in description.json()["paths"].values()
                  for operation in path.values()]
    assert len(operations) == len(set(operations)) == 3  # GET /, GET /healthz, POST /predict
    assert [head.status_code for head in heads] == [200, 200]
    assert [str(warning.message) for warning in recwarn] == []

    async def wrong_methods():
        transport = httpx.ASGITransport(app=create_app(Stub()))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/"), await client.delete("/healthz")

    assert [answer.headers["allow"] for answer in asyncio.run(wrong_methods())] == ["GET, HEAD"] * 2


def test_at_most_two_images_are_decoded_and_preprocessed_at_once(seven):
    """A 72 KB PNG can hold 4096x4096 RGBA pixels, over 500 MB to preprocess: 8 at once took the server from
    250 MB to 4 GB (measured: app.py's DECODE_SLOTS comment). Requests run in the thread pool, and the decodes
    wait their turn: 8 concurrent requests, each holding its slot for 0.2 s, never have more than 2 at once."""
    import asyncio
    import threading

    from mnist_ops.serve.app import DECODE_SLOTS, create_app

    class SlowPredictor(Predictor):
        backend, model_name, mean, std, labels = "stub", "stub", 0.1307, 0.3081, [str(d) for d in range(10)]
        active = most = 0
        lock = threading.Lock()

        def logits(self, inputs):
            with self.lock:
                SlowPredictor.active += 1
                SlowPredictor.most = max(SlowPredictor.most, SlowPredictor.active)
            time.sleep(0.2)
            with self.lock:
                SlowPredictor.active -= 1
            return np.tile(np.arange(10, dtype=np.float32), (len(inputs), 1))

    async def eight_at_once():
        transport = httpx.ASGITransport(app=create_app(SlowPredictor()))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/predict", content=seven) for _ in range(8)))

    answers = asyncio.run(eight_at_once())
    assert [answer.status_code for answer in answers] == [200] * 8 and answers[0].json()["digit"] == 9
    assert DECODE_SLOTS == 2 and SlowPredictor.most == 2


def test_the_onnx_model_serves_the_same_answer(onnx_model, seven, server):
    process, url = start_server("--model", onnx_model)
    try:
        answer = httpx.post(f"{url}/predict", content=seven, timeout=10).json()
        assert httpx.get(f"{url}/healthz", timeout=10).json()["backend"] == "onnxruntime"
    finally:
        stop(process)
    reference = httpx.post(f"{server}/predict", content=seven, timeout=10).json()
    assert answer["digit"] == reference["digit"] == 7 and answer["pixels"] == reference["pixels"]
    assert np.allclose(answer["probabilities"], reference["probabilities"], atol=1e-4)


def test_a_model_with_no_finite_answer_gets_json_not_a_500(altered_checkpoint, seven):
    """Weights that overflow float32 inside the net: once a plain-text 500 (NaN is not JSON)."""
    process, url = start_server("--checkpoint", altered_checkpoint("huge.pt", lambda tensor: tensor * 1e30))
    try:
        response = httpx.post(f"{url}/predict", content=seven, timeout=10)
        assert response.status_code == 422 and "gives no finite answer" in response.json()["detail"]
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # still serving
    finally:
        stop(process)


def test_serve_mistakes_give_one_line(digit_checkpoint, altered_checkpoint, edited_onnx, tmp_path, capsys,
                                      monkeypatch):
    diverged = altered_checkpoint("diverged.pt", lambda tensor: tensor * float("nan"))
    few_labels = edited_onnx("few-labels.onnx", labels='["a"]')
    for args, fragment in [(["--checkpoint", diverged, "--port", "0"], "its weights hold NaN"),  # once served NaN
                           (["--model", few_labels, "--port", "0"], "1 labels for its 10 outputs"),  # once 500s
                           (["--checkpoint", digit_checkpoint, "--port", "70000"], "not a port number"),
                           (["--checkpoint", digit_checkpoint, "--host", "203.0.113.7"], "cannot listen"),
                           (["--checkpoint", tmp_path / "absent.pt", "--port", "0"], "not found"),
                           (["--model", tmp_path / "absent.onnx", "--port", "0"], "not found"),
                           # the port is checked before the model is loaded, and a run directory's
                           # "using .../last.pt" is said only once its checkpoint has loaded
                           (["--checkpoint", tmp_path / "broken-run", "--port", "70000"], "not a port number"),
                           (["--checkpoint", tmp_path / "broken-run", "--port", "0"], "is unreadable")]:
        (tmp_path / "broken-run").mkdir(exist_ok=True)
        (tmp_path / "broken-run" / "last.pt").write_bytes(b"not a checkpoint")
        assert main(["serve", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and fragment in err, err
    with pytest.raises(SystemExit) as exit_info:  # argparse: one of the two is required
        main(["serve"])
    assert exit_info.value.code == 2 and "--checkpoint --model" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the serve extra were not installed
    assert main(["serve", "--checkpoint", str(digit_checkpoint)]) == 2
    assert capsys.readouterr().err == "mnist-ops: error: this command needs the fastapi package: " \
                                      "pip install 'mnist-ops[serve]' (from a checkout: pip install -c " \
                                      "constraints.txt -e '.[serve]')\n"


needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not installed at "
                                    "/usr/bin/chromium (apt-get install chromium); .ci/run installs it")


@contextlib.contextmanager
def chromium_page(tmp_path, init_script: str | None = None):
    """A page of Debian's Chromium through Playwright, in a fresh profile, closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 900, "height": 620})
        try:
            page = browser.new_page()
            if init_script:
                page.add_init_script(init_script)
            yield page
        finally:
            browser.close()


def strokes_from(pixels: np.ndarray, threshold: int = 128) -> list[tuple[int, int, int]]:
    """Trace an MNIST digit as pen strokes: one left-to-right stroke over each run of inked pixels
    in each row, as (row, first column, last column)."""
    strokes = []
    for row, values in enumerate(pixels):
        inked = np.flatnonzero(values > threshold)
        if len(inked):
            for run in np.split(inked, np.flatnonzero(np.diff(inked) > 1) + 1):
                strokes.append((row, int(run[0]), int(run[-1])))
    return strokes


@needs_chromium
def test_drawing_digits_in_a_real_browser(server, mnist_test, tmp_path):
    scale = 9  # screen pixels per MNIST pixel: the digit is about 180 px tall on the 280 px pad
    with chromium_page(tmp_path) as page:
        page.goto(server + "/", timeout=20_000)
        box = page.locator("#pad").bounding_box()
        left, top = box["x"] + (box["width"] - 28 * scale) / 2, box["y"] + (box["height"] - 28 * scale) / 2
        for index in range(4):  # the first four test digits: 7, 2, 1, 0
            label = int(mnist_test.labels[index])
            page.click("#clear")
            traced = strokes_from(mnist_test.images[index].numpy())
            for row, first, last in traced:
                y = top + (row + 0.5) * scale
                page.mouse.move(left + (first + 0.5) * scale, y)
                page.mouse.down()
                page.mouse.move(left + (last + 0.5) * scale, y, steps=max(2, last - first))
                page.mouse.up()
            page.wait_for_function("n => document.getElementById('answer').dataset.stroke === String(n)",
                                   arg=len(traced), timeout=30_000)
            assert page.text_content("#digit") == str(label), f"drew a {label}"
            assert page.locator("#bars .best").first.text_content() == str(label)
            seen_ink = page.evaluate("() => document.getElementById('seen').getContext('2d')"
                                     ".getImageData(0, 0, 28, 28).data.reduce((a, b) => a + b, 0)")
            assert seen_ink > 28 * 28 * 255  # the 28x28 image the model saw is drawn (beyond opaque black)
        screenshot = page.screenshot()
        (tmp_path / "draw-page.png").write_bytes(screenshot)
        if os.environ.get("MNIST_OPS_SCREENSHOT"):  # MNIST_OPS_SCREENSHOT=docs/draw-page.png refreshes the README's
            Path(os.environ["MNIST_OPS_SCREENSHOT"]).write_bytes(screenshot)
        page.click("#clear")
        assert page.text_content("#digit") == "" and page.get_attribute("#answer", "data-stroke") == "0"


@needs_chromium
def test_the_page_drops_stale_answers_clears_on_errors_and_draws_only_what_it_should(server, tmp_path):
    # the page's first request is held back 2 s: its answer arrives after a Clear and a new drawing
    hold_first = """(() => { const real = window.fetch; let calls = 0;
        window.fetch = (...args) => (++calls === 1 ? new Promise(r => setTimeout(r, 2000)) : Promise.resolve())
            .then(() => real(...args)); })();"""
    with chromium_page(tmp_path, init_script=hold_first) as page:
        page.goto(server + "/", timeout=20_000)
        box = page.locator("#pad").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

        def stroke(dx1, dy1, dx2, dy2, button="left"):
            page.mouse.move(x + dx1, y + dy1)
            page.mouse.down(button=button)
            page.mouse.move(x + dx2, y + dy2, steps=12)
            page.mouse.up(button=button)

        def answered(n):
            page.wait_for_function("n => document.getElementById('answer').dataset.stroke === String(n)",
                                   arg=n, timeout=30_000)

        ink = ("() => { const c = document.getElementById('pad'), d = c.getContext('2d')"
               ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
               " for (let i = 0; i < d.length; i += 4) n += d[i] < 128; return n; }")
        stroke(-60, -80, 60, -80)  # a 7's bar: its answer is held back
        stroke(60, -80, -20, 90)
        page.click("#clear")
        stroke(0, -90, 0, 90)  # a 1
        answered(1)
        page.wait_for_timeout(2500)  # the held answer to the cleared 7 has arrived by now
        assert page.text_content("#digit") == "1" and page.get_attribute("#answer", "data-stroke") == "1"

        page.click("#clear")
        stroke(-50, -50, 50, 50, button="right")  # a right-drag draws nothing and asks nothing
        page.wait_for_timeout(300)
        assert page.evaluate(ink) == 0 and page.get_attribute("#answer", "data-stroke") == "0"
        page.mouse.click(x, y)  # a tap draws a dot
        answered(1)
        assert page.evaluate(ink) > 0 and "no digit found" not in page.text_content("#status")

        stroke(0, -90, 0, 90)
        answered(2)
        assert page.text_content("#digit") != ""
        page.route("**/predict", lambda route: route.fulfill(status=502, content_type="text/html",
                                                             body="<html>Bad Gateway</html>"))
        stroke(-40, 0, 40, 0)  # a proxy's error page: said so, and the old answer is gone
        answered(3)
        assert page.text_content("#status").startswith("server error 502")
        assert page.text_content("#digit") == "" and page.text_content("#bars").count("%") == 0


@needs_chromium
def test_a_chosen_picture_is_read_small_or_over_the_upload_limit(server, mnist_test, tmp_path):
    """The page's file chooser (keyboard users' and phone cameras' way in): a scan of a digit is sent as it is, a
    photo over the server's 1 MB limit or a picture over the pixels it decodes is shrunk in the browser first, a WebP
    is read, and what the server refuses is shown."""
    def answered():
        page.wait_for_function("() => document.getElementById('answer').dataset.stroke === 'picture'", timeout=30_000)

    two = Image.fromarray(255 - mnist_test.images[1].numpy()).resize((300, 300), Image.Resampling.BILINEAR)
    two.save(tmp_path / "two.png")
    seven = Image.fromarray(255 - mnist_test.images[0].numpy()).resize((1400, 1400), Image.Resampling.BILINEAR)
    grain = np.random.default_rng(0).integers(-30, 30, (2400, 2400), dtype=np.int16)
    photo = np.clip(np.full((2400, 2400), 235, np.int16) + grain, 0, 255).astype(np.uint8)
    photo[500:1900, 500:1900] = np.minimum(photo[500:1900, 500:1900], np.asarray(seven))
    Image.fromarray(photo).convert("RGB").save(tmp_path / "photo.jpg", quality=98)
    assert (tmp_path / "photo.jpg").stat().st_size > 1024 * 1024  # the server alone would answer 413
    poster = Image.new("L", (4200, 4200), 255)  # 17.6 million pixels, which the server refuses (413), in a small file
    poster.paste(two.resize((2000, 2000), Image.Resampling.BILINEAR), (1100, 1100))
    poster.save(tmp_path / "poster.png", optimize=True)
    assert (tmp_path / "poster.png").stat().st_size < 1024 * 1024
    seven.resize((300, 300)).save(tmp_path / "seven.webp")
    (tmp_path / "notes.png").write_text("not a picture")
    with chromium_page(tmp_path) as page:
        page.goto(server + "/", timeout=20_000)
        page.set_input_files("#picture", str(tmp_path / "two.png"))
        answered()
        assert page.text_content("#digit") == "2" and page.text_content("#status") == ""
        page.set_input_files("#picture", str(tmp_path / "photo.jpg"))
        page.wait_for_function("() => document.getElementById('digit').textContent === '7'", timeout=30_000)
        assert page.text_content("#status") == ""
        page.set_input_files("#picture", str(tmp_path / "poster.png"))
        page.wait_for_function("() => document.getElementById('digit').textContent === '2'", timeout=30_000)
        assert page.text_content("#status") == ""
        page.set_input_files("#picture", str(tmp_path / "seven.webp"))
        page.wait_for_function("() => document.getElementById('digit').textContent === '7'", timeout=30_000)
        assert page.text_content("#status") == ""
        page.set_input_files("#picture", str(tmp_path / "notes.png"))
        page.wait_for_function("() => document.getElementById('status').textContent !== ''", timeout=30_000)
        assert "not an image" in page.text_content("#status") and page.text_content("#digit") == ""
        assert page.get_attribute("#answer", "data-stroke") == "picture"


def test_a_malformed_upload_is_a_400_and_not_a_line_on_the_servers_stderr(caplog):
    import asyncio

    from mnist_ops.serve.app import create_app

    class Stub(Predictor):
        backend, model_name, mean, std, labels = "stub", "stub", 0.1307, 0.3081, [str(d) for d in range(10)]

    async def post():
        transport = httpx.ASGITransport(app=create_app(Stub()))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/predict", content=b"garbage",
                                     headers={"content-type": "multipart/form-data; boundary=xyz"})

    answer = asyncio.run(post())
    assert answer.status_code == 400 and answer.json()["detail"].startswith("malformed multipart body")
    assert not caplog.records  # python-multipart's warning went to stderr (logging's last resort) beside the 400
