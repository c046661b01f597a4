"""
ARI half-open check (issue 15): one ``twistd xlbridge --engines relay
--ports none --ari`` whose ARI traffic goes through a
:mod:`reliability.faultproxy` to the fake ARI; the events WebSocket is
blackholed for 40 s (half-open), then the ARI server is made unreachable
(connections reset, new ones refused) for 16 s and brought back.  Every 2 s
it records ``/readyz`` and xlbridge's ESTABLISHED connections to the proxy.

Why: ``/readyz`` is what a load balancer uses to stop sending calls to a
bridge that cannot take them; a half-open ARI socket means no StasisStart
will ever arrive.

Run: ``.venv/bin/python -m reliability.ari_halfopen`` (about 2 minutes);
writes ``reliability/results/ari_halfopen.json``.
"""
import json, os, subprocess, tempfile, time
from reliability.faults import Proxy, http_json, stop, tcp_connections
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
os.chdir(ROOT)
W = Path(tempfile.mkdtemp(prefix="ari-halfopen-"))
fh = subprocess.Popen([".venv/bin/python", "-m", "reliability.fakehost"], stdout=subprocess.PIPE, stderr=open(W/"fh.log","w"), text=True)
urls = json.loads(fh.stdout.readline())
px = Proxy("ari", urls["ari"].split("//")[1], W/"px.log")
pw = W/"pw"; pw.write_text("s3cret"); pw.chmod(0o600)
env = dict(os.environ, XLBRIDGE_MONITOR_TOKEN="t")
xl = subprocess.Popen([".venv/bin/twistd", "-n", "--pidfile=", "xlbridge", "--engines", "relay", "--ports", "none",
                       "--monitor", "tcp:3912:interface=127.0.0.1", "--ari", f"http://127.0.0.1:{px.port}",
                       "--ari-user", "xlbridge", "--ari-password-file", str(pw)], env=env,
                      stdout=open(W/"xl.log","w"), stderr=subprocess.STDOUT)
out = []
try:
    t0 = time.time()
    def poll(label, secs):
        end = time.time() + secs
        while time.time() < end:
            try:
                r = http_json("http://127.0.0.1:3912/readyz", token=None, timeout=3)
            except Exception as e:
                r = {"error": str(e)}
            c = tcp_connections(xl.pid, {"ari": px.port})
            out.append({"t": round(time.time()-t0,1), "phase": label, "ready": r.get("status"), "reasons": r.get("reasons"),
                        "ari_conns": c.get("ari", {}).get("established")})
            time.sleep(2)
    poll("before", 10)
    px("blackhole"); poll("blackhole", 40)
    px("clear"); poll("after", 16)
    px("refuse on"); px("reset"); poll("ari down (refused)", 16)
    px("refuse off"); poll("ari back", 20)
finally:
    stop(xl); stop(px.proc); stop(fh)
for o in out:
    print(o)
res = ROOT / "reliability" / "results" / "ari_halfopen.json"
res.write_text(json.dumps({"command": "python -m reliability.ari_halfopen", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
                           "loadavg": os.getloadavg(), "samples": out,
                           "log": [l for l in (W / "xl.log").read_text().splitlines() if "ARIEvents" in l]}, indent=1))
print("wrote", res)
