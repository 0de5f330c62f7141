"""`wavae web` over plain HTTP: its guards (Host, Origin, token), upload checks, paths kept in the state dir,
niced renders, and its configuration; the real server as its own process on loopback."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import synth_audio
from wavae.cli import main as wavae_main
from wavae.device.web.app import is_wav, safe_name

TOKEN = "0123456789abcdef0123"


class Web:
    def __init__(self, proc: subprocess.Popen, port: int, state: Path):
        self.proc, self.port, self.state = proc, port, state

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        h = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, dict(r.getheaders()), data


@pytest.fixture
def start_web(tiny_bundle, tmp_path):
    procs = []

    def start(config: str = "", *args: str) -> Web:
        cfg = tmp_path / "device.toml"
        cfg.write_text(f'[bundle]\npath = "{tiny_bundle}"\n[web]\nstate_dir = "{tmp_path / "state"}"\n' + config)
        proc = subprocess.Popen([sys.executable, "-m", "wavae", "web", "--config", str(cfg), "--port", "0", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
        procs.append(proc)
        line = proc.stdout.readline()
        assert "serving http://" in line, line
        port = int(line.split("serving http://", 1)[1].split("/")[0].rsplit(":", 1)[1])
        return Web(proc, port, tmp_path / "state")

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def wav_bytes(tmp_path: Path, seconds: float = 0.5, rate: int = 22050) -> bytes:
    p = tmp_path / "up.wav"
    sf.write(p, synth_audio(seconds, rate, seed=3), rate)
    return p.read_bytes()


def test_pages_and_assets_are_served_by_the_device_itself(start_web):
    web = start_web()
    for path in ("/", "/playground"):
        status, headers, body = web.request("GET", path)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        html = body.decode()
        assert "http://" not in html and "https://" not in html  # no CDN, nothing fetched from elsewhere
        for asset in [a.split('"')[0] for a in html.split('src="')[1:] + html.split('href="')[1:]]:
            if asset.startswith("/static/"):
                assert web.request("GET", asset)[0] == 200, asset
    static = Path(__file__).resolve().parents[1] / "device" / "web" / "static"
    for f in static.iterdir():
        assert "//cdn" not in f.read_text() and "https://" not in f.read_text(), f


def test_host_and_origin_guards(start_web):
    web = start_web()
    assert web.request("GET", "/api/info", headers={"Host": "evil.example"})[0] == 403  # DNS rebinding
    status, _, _ = web.request("POST", "/api/playground/render", b"{}",
                               {"Origin": "http://evil.example", "Content-Type": "application/json"})
    assert status == 403  # another site's page cannot drive the device
    assert web.request("GET", "/api/info", headers={"Origin": f"http://127.0.0.1:{web.port}"})[0] == 200


def test_a_token_guards_every_request_and_is_kept_in_a_cookie(start_web):
    web = start_web(f'lan = true\ntoken = "{TOKEN}"\n')
    assert web.request("GET", "/")[0] == 401
    assert web.request("GET", "/?token=wrong-wrong-wrong-wrong")[0] == 401
    status, headers, _ = web.request("GET", f"/?token={TOKEN}")
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert web.request("GET", "/api/info", headers={"Cookie": cookie})[0] == 200
    assert web.request("GET", "/api/info", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_lan_binding_needs_the_config_setting_and_a_token(capsys, tiny_bundle, tmp_path):
    rc = wavae_main(["web", "--bundle", str(tiny_bundle), "--host", "0.0.0.0", "--port", "0"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "needs `lan = true` and a `token`" in err
    cfg = tmp_path / "lan.toml"
    cfg.write_text('[web]\nhost = "0.0.0.0"\nlan = true\n')  # a LAN address without a token
    rc = wavae_main(["web", "--config", str(cfg)])
    assert rc != 0 and "a `token`" in capsys.readouterr().err


def test_uploads_are_type_checked_and_size_capped(start_web, tmp_path):
    web = start_web("upload_mb = 0.2\n")
    sounds = web.state / "playground" / "sounds"
    assert web.request("POST", "/api/playground/upload?name=x.wav", b"ID3 not a wav at all")[0] == 415
    status, _, body = web.request("POST", "/api/playground/upload?name=big.wav", b"RIFF" + b"\0" * 300_000)
    assert status == 413 and b"at most" in body
    broken = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40  # a WAV header with nothing readable behind it
    status, _, body = web.request("POST", "/api/playground/upload?name=broken.wav", broken)
    assert status == 422 and "error" in json.loads(body)
    assert not list(sounds.glob("broken*"))  # nothing kept of a refused upload
    status, _, body = web.request("POST", "/api/playground/upload?name=../../My%20Cello!.wav", wav_bytes(tmp_path))
    assert status == 200, body
    res = json.loads(body)
    assert res["name"] == "my-cello" and (sounds / "my-cello.wav").is_file()
    assert res["path"]["frames"] > 0 and res["spectrogram"]["columns"] > 0


def test_paths_never_leave_the_state_directory(start_web, tmp_path):
    web = start_web()
    (tmp_path / "secret.wav").write_bytes(wav_bytes(tmp_path))
    assert web.request("POST", "/api/playground/upload?name=a.wav", wav_bytes(tmp_path))[0] == 200
    for path in ("/files/sounds/../../secret.wav", "/files/sounds/%2e%2e%2f%2e%2e%2fsecret.wav",
                 "/files/renders/../sounds/a.wav", "/static/../app.py", "/static/..%2fapp.py",
                 "/api/playground/sound?name=../../secret", "/files/etc/passwd.wav"):
        assert web.request("GET", path)[0] == 404, path
    body = json.dumps({"source": {"kind": "path", "sounds": ["../../secret"]}, "ops": []}).encode()
    assert web.request("POST", "/api/playground/render", body)[0] == 404
    assert web.request("GET", "/files/sounds/a.wav")[0] == 200


def test_renders_run_niced_and_give_audio_of_the_paths_length(start_web, tiny_bundle, tmp_path):
    from wavae.device.bundle import read_manifest

    m = read_manifest(tiny_bundle)
    web = start_web()
    up = json.loads(web.request("POST", "/api/playground/upload?name=a.wav", wav_bytes(tmp_path))[2])
    body = json.dumps({"source": {"kind": "path", "sounds": ["a"]}, "ops": [{"op": "reverse"}]}).encode()
    status, _, data = web.request("POST", "/api/playground/render", body)
    assert status == 200, data
    res = json.loads(data)
    assert res["nice"] >= min(19, 10 + os.nice(0))  # below the server and the audio loop
    status, headers, wav = web.request("GET", res["wav"] + "?download=1")
    assert status == 200 and headers["Content-Type"] == "audio/wav" and "attachment" in headers["Content-Disposition"]
    path = tmp_path / "r.wav"
    path.write_bytes(wav)
    y, sr = sf.read(path, dtype="float32")
    assert sr == m["sample_rate"] and y.shape == (up["path"]["frames"] * m["frame"],) and np.isfinite(y).all()
    bad = json.dumps({"source": {"kind": "path", "sounds": ["a"]}, "ops": [{"op": "bias", "dim": 99, "value": 1}]})
    status, _, data = web.request("POST", "/api/playground/render", bad.encode())
    assert status == 422 and "dimension 99 does not exist" in json.loads(data)["error"]


def test_safe_names_and_wav_magic():
    assert safe_name("../../My Cello!.WAV") == "my-cello"
    assert safe_name("....wav") == "sound"
    assert len(safe_name("x" * 300 + ".wav")) == 48
    assert is_wav(b"RIFF\0\0\0\0WAVEfmt ") and not is_wav(b"OggS\0\0\0\0\0\0\0\0")
