"""The FiftyOne App in a real headless Chromium, driven by Playwright.

Fixtures shared by the module's tests: a persistent photo dataset with a
scored run and a UMAP map (deleted at the end), an App server started on
127.0.0.1 on a free port with the tests' database and plugins dir (stopped at
the end, children included), and a Chromium from Debian
(``/usr/bin/chromium``; never a browser download).
Screenshots of every step go to ``test-artifacts/browser/``.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from . import data

REPO = data.REPO
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
# from /work/shared/reference/app-browser-testing.md: WebGL (the embeddings
# plot) renders through SwiftShader; never --disable-software-rasterizer
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
RUN_KEY = "ncl"
UMAP_SPACE = "emb_image"
SERVER_START_TIMEOUT = 90  # s


# --- Chromium -----------------------------------------------------------------


def _install_chromium():
    """Installs Debian's chromium as ``make test`` does (scripts/setup.sh
    --test); returns an explanation when that is not possible."""
    if not shutil.which("apt-get"):
        return "apt-get is not available"
    cmd = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            return "not root and no sudo to run apt-get"
        cmd = ["sudo", "-n"] + cmd
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in (cmd, None):
        if attempt is None:  # the package lists may be stale: update once
            update = cmd[: cmd.index("apt-get")] + ["apt-get", "update", "-q"]
            subprocess.run(update, env=env, capture_output=True, timeout=300)
            attempt = cmd
        try:
            done = subprocess.run(attempt, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "%s failed: %s" % (" ".join(attempt), e)
        if done.returncode == 0 and os.access(CHROMIUM, os.X_OK):
            return None
    return "%s failed: %s" % (" ".join(cmd), (done.stderr or done.stdout).strip()[-300:])


@pytest.fixture(scope="session")
def chromium_path():
    if not os.access(CHROMIUM, os.X_OK):
        why = _install_chromium()
        if why is not None:
            pytest.skip(
                "browser tests need Debian's chromium at %s (make test installs it: "
                "apt-get install chromium chromium-driver); it is missing and could not "
                "be installed: %s" % (CHROMIUM, why)
            )
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


# --- the dataset --------------------------------------------------------------


# The dataset, server and browser live for the test module, not the session:
# Playwright's sync API keeps an asyncio loop running in the main thread while
# it is open, and with a running loop fiftyone.operators.execute_operator()
# returns a pending Task instead of running the operator, which breaks any
# later test that executes operators from Python.


@pytest.fixture(scope="module")
def review_dataset(request, artifacts):
    """A persistent dataset of real photos, a quarter of their captions
    swapped, scored by run ``ncl`` (gmm over the precomputed embeddings,
    embeddings stored) with a UMAP map of its image embeddings
    (``ncl_emb_image_umap``). Deleted at the end."""
    import fiftyone as fo

    import fiftyone_ncl as ncl

    records = data.coco_mini_records()
    if records is None:
        records = data.skimage_records(request.getfixturevalue("skimage_photos"))
    (artifacts / "credits.txt").write_text("\n".join(r[3] for r in records) + "\n")
    name = "ncl-browser-%s" % uuid.uuid4().hex[:8]
    checkpoints = None
    try:
        dataset = data.build_dataset(name, records)
        checkpoints = os.path.dirname(ncl.fo.runs.checkpoint_path(dataset, RUN_KEY))
        ncl.compute_correspondence(
            dataset,
            "caption",
            method="gmm",
            image_embeddings="image_embedding",
            text_embeddings="caption_embedding",
            run_key=RUN_KEY,
            store_embeddings=True,
            progress=False,
        )
        ncl.compute_visualizations(dataset, RUN_KEY, spaces=[UMAP_SPACE])
        yield dataset
    finally:
        from fiftyone.operators.delegated import DelegatedOperationService

        if fo.dataset_exists(name):
            DelegatedOperationService().delete_for_dataset(fo.load_dataset(name)._doc.id)
            fo.delete_dataset(name)
        if checkpoints:  # trained runs (none with these inputs) save models here
            shutil.rmtree(checkpoints, ignore_errors=True)


# --- the App server -----------------------------------------------------------


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _stop_tree(pid, timeout=10.0):
    """Stops process ``pid`` and every process below it, by pid."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = root.children(recursive=True) + [root]
    # the database belongs to the test process (it connected first): never
    # stop a mongod or FiftyOne's database service from here
    procs = [p for p in procs if not _is_database(p)]
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def _is_database(proc):
    import psutil

    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "mongod" in cmd or os.path.join("fiftyone", "service") in cmd


@pytest.fixture(scope="module")
def app_server(review_dataset, artifacts):
    """``http://127.0.0.1:<port>`` of an App server seeing the test database
    and this repository's plugin (the environment set by tests/conftest.py)."""
    import importlib.util

    main = importlib.util.find_spec("fiftyone.server.main").origin
    port = _free_port()
    url = "http://127.0.0.1:%d" % port
    log_path = artifacts / "server.log"
    env = dict(os.environ)  # FIFTYONE_DATABASE_NAME, FIFTYONE_PLUGINS_DIR, ...
    env.pop("FIFTYONE_SERVER", None)
    with open(log_path, "w") as log:
        # never --clean_start: it deletes every dataset of the database
        proc = subprocess.Popen(
            [sys.executable, main, "--port", str(port), "--address", "127.0.0.1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
            start_new_session=True,
        )
    (artifacts / "server.pid").write_text("%d\n" % proc.pid)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _answers(url):
            if proc.poll() is not None:
                pytest.fail("the App server exited (%s); log:\n%s" % (proc.returncode, log_path.read_text()[-3000:]))
            if time.monotonic() > deadline:
                pytest.fail("the App server did not answer on %s within %d s; log:\n%s"
                            % (url, SERVER_START_TIMEOUT, log_path.read_text()[-3000:]))
            time.sleep(0.5)
        yield url
    finally:
        _stop_tree(proc.pid)
        proc.wait(timeout=10)


# --- the browser --------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(chromium_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="browser tests need the playwright package (pip install -e .[test])"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def app(browser, app_server, review_dataset, artifacts):
    """A fresh page showing the dataset's grid in the App."""
    from .app import App

    context = browser.new_context(viewport=VIEWPORT)
    # disables the App's analytics and QA banners
    context.add_init_script("window.IS_PLAYWRIGHT = true")
    page = context.new_page()
    page.set_default_timeout(30_000)
    session = App(page, app_server, review_dataset, artifacts)
    try:
        session.open()
        yield session
    finally:
        context.close()
