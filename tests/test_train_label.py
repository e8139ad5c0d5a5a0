"""`make label` (train/label.py): the review page's HTTP API on real files, and a Chromium smoke test.

Nothing the user made is deleted: trashed crops move to <data>/.trash/ and can be restored; a move
never overwrites. The server only answers its own page (Host, Origin, JSON content type).
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from train.label import Dataset, LabelServer

pytestmark = pytest.mark.timeout(120)


def png(seed: int) -> bytes:
    import cv2

    return cv2.imencode(".png", np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8))[1].tobytes()


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "mine"
    for i, rel in enumerate(
        ["open/alice/a1.png", "open/alice/a2.png", "open/bob/b1.png", "closed/alice/a3.png", "closed/bob/b1.png"]
    ):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png(i))
    return root


@pytest.fixture
def server(data):
    s = LabelServer(Dataset(data), port=0)
    threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield s
    s.shutdown()
    s.server_close()


def call(server, method: str, path: str, body=None, headers: dict | None = None):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    h = {"Host": f"127.0.0.1:{server.port}"}
    if body is not None:
        h["Content-Type"] = "application/json"
        body = json.dumps(body)
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if r.getheader("Content-Type") == "application/json" else data)


def test_items_move_trash_restore(server, data):
    status, items = call(server, "GET", "/api/items")
    assert status == 200 and items["labels"] == ["closed", "open"] and items["persons"] == ["alice", "bob"]
    assert [i["path"] for i in items["items"]][:2] == ["closed/alice/a3.png", "closed/bob/b1.png"]

    # open/bob/b1.png → closed/bob: the name is taken there by another crop; both kept
    status, r = call(server, "POST", "/api/move", {"paths": ["open/bob/b1.png"], "label": "closed", "person": "bob"})
    assert status == 200 and r["moved"] == ["closed/bob/b1_2.png"]
    assert (data / "closed/bob/b1.png").read_bytes() == png(4) and (data / "closed/bob/b1_2.png").read_bytes() == png(2)
    assert not (data / "open/bob/b1.png").exists()

    # a new person folder
    status, r = call(server, "POST", "/api/move", {"paths": ["open/alice/a2.png"], "label": "open", "person": "carol"})
    assert status == 200 and (data / "open/carol/a2.png").read_bytes() == png(1)

    # trash: moved, not deleted; restore brings it back
    status, r = call(server, "POST", "/api/trash", {"paths": ["open/alice/a1.png"]})
    assert status == 200 and r["moved"] == [".trash/open/alice/a1.png"]
    assert (data / ".trash/open/alice/a1.png").read_bytes() == png(0) and not (data / "open/alice/a1.png").exists()
    status, items = call(server, "GET", "/api/items")
    assert items["trash"] == [".trash/open/alice/a1.png"]
    assert "open/alice/a1.png" not in [i["path"] for i in items["items"]]
    status, img = call(server, "GET", "/img/.trash/open/alice/a1.png")
    assert status == 200 and img == png(0)
    status, r = call(server, "POST", "/api/restore", {"paths": [".trash/open/alice/a1.png"]})
    assert status == 200 and r["moved"] == ["open/alice/a1.png"] and (data / "open/alice/a1.png").read_bytes() == png(0)
    assert len(list(data.rglob("*.png"))) == 5  # nothing lost


@pytest.mark.parametrize(
    "body, code",
    [
        ({"paths": ["../outside.png"]}, 400),
        ({"paths": ["/etc/passwd"]}, 400),
        ({"paths": ["open/alice/missing.png"]}, 404),
        ({"paths": [".trash/open/alice/a1.png"]}, 400),  # trash only through /api/trash's own paths
        ({"paths": []}, 400),
    ],
)
def test_bad_paths_refused(server, data, body, code):
    (data.parent / "outside.png").write_bytes(png(9))
    status, r = call(server, "POST", "/api/trash", body)
    assert status == code, r
    assert (data.parent / "outside.png").exists() and len(list(data.rglob("*.png"))) == 5


def test_bad_names_and_foreign_requests_refused(server, data):
    status, r = call(server, "POST", "/api/move", {"paths": ["open/alice/a1.png"], "label": "../x", "person": "a"})
    assert status == 400 and "label" in r["error"]
    status, _ = call(
        server, "POST", "/api/trash", {"paths": ["open/alice/a1.png"]}, headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    status, _ = call(server, "POST", "/api/trash", {"paths": ["open/alice/a1.png"]}, headers={"Host": "evil.example"})
    assert status == 403
    status, _ = call(
        server, "POST", "/api/trash", {"paths": ["open/alice/a1.png"]}, headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    assert (data / "open/alice/a1.png").exists()


def test_review_page_in_chromium(server, data):
    from tests.helpers.chromium import ARTIFACTS, Browser

    with Browser() as b:
        page = b.open(server.url)
        b.wait(page, "document.querySelectorAll('.crop').length === 5")
        b.wait(page, "[...document.querySelectorAll('.crop img')].every(i => i.complete && i.naturalWidth === 16)")
        b.screenshot(page, ARTIFACTS / "label.png")
        # select open/bob/b1.png and move it to closed/carol
        b.eval(page, "document.querySelector('.crop[data-path=\"open/bob/b1.png\"]').click()")
        b.eval(
            page, "document.getElementById('label').value = 'closed'; document.getElementById('person').value = 'carol'"
        )
        b.eval(page, "document.getElementById('move').click()")
        b.wait(page, "document.querySelector('.crop[data-path=\"closed/carol/b1.png\"]') !== null")
        assert (data / "closed/carol/b1.png").read_bytes() == png(2)
        # and throw one away
        b.eval(page, "document.querySelector('.crop[data-path=\"open/alice/a2.png\"]').click()")
        b.eval(page, "document.getElementById('trash').click()")
        b.wait(page, "document.querySelector('#trashgrid .crop[data-path=\".trash/open/alice/a2.png\"]') !== null")
        assert (data / ".trash/open/alice/a2.png").exists() and not (data / "open/alice/a2.png").exists()
        assert "trash: 1 crop(s)" in b.eval(page, "document.getElementById('msg').textContent")
