"""Progress of `earnserve eval` and `earnserve batch` on stderr: one line redrawn in place when
stderr is a terminal (a pseudo-terminal here), plain lines when it is a pipe, nothing with
--quiet. Standard library only.

Run: python3 tests/cli/progress_test.py build/api/earnserve . ../shared
"""
import json
import os
import pty
import subprocess
import sys
import tempfile


def run(cmd, tty):
    """(exit code, stdout, stderr) with stderr on a pseudo-terminal when `tty`."""
    if not tty:
        p = subprocess.run(cmd, capture_output=True, timeout=600)
        return p.returncode, p.stdout.decode(), p.stderr.decode()
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out = p.stdout.read()
    p.wait(600)
    os.close(master)
    # The terminal turns each "\n" into "\r\n" (onlcr); undo it to see what was written.
    return p.returncode, out.decode(), err.decode().replace("\r\n", "\n")


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name)
    if not ok:
        print(detail)
        sys.exit(1)


def main():
    binary, src, shared = sys.argv[1:4]
    tiny_rec = os.path.join(src, "tests/fixtures/models/tiny-rec")
    data = os.path.join(shared, "datasets/beauty")
    if not os.path.isdir(data):
        print(f"SKIP: {data} is missing")
        sys.exit(77)
    evaluate = [binary, "eval", "--model", tiny_rec, "--data", data, "--limit", "40",
                "--beam-width", "5", "--json"]

    code, out, err = run(evaluate, tty=True)
    check("eval on a terminal exits 0", code == 0, err)
    check("eval's stdout is still one JSON object", json.loads(out)["users"] == 40, out)
    check("eval on a terminal redraws one line", "\r" in err and "\x1b[K" in err, repr(err))
    last = err.rsplit("\r", 1)[-1]
    check("the final line says 40/40 and the time", "eval: 40/40 (100.0%)" in last and
          "done in" in last and last.endswith("\n"), repr(err))
    redraws = [seg for seg in err.split("\r") if seg.startswith("eval:")]
    check("no progress line but the last ends with a newline",
          all("\n" not in seg for seg in redraws[:-1]), repr(err))

    code, out, err = run(evaluate + ["--quiet"], tty=True)
    check("eval --quiet exits 0", code == 0, err)
    check("eval --quiet on a terminal shows no progress", "eval:" not in err and "\r" not in err,
          repr(err))

    code, out, err = run(evaluate, tty=False)
    check("eval into a pipe exits 0", code == 0, err)
    check("eval into a pipe writes plain lines", "\r" not in err and "\x1b" not in err and
          any(l.startswith("eval: 40/40 (100.0%)") and "done in" in l for l in err.splitlines()),
          repr(err))

    with tempfile.TemporaryDirectory() as tmp:
        lines = [json.dumps({"custom_id": f"u{i}", "method": "POST", "url": "/v1/recommendations",
                             "body": {"history": [str(i), str(i + 1)], "top_k": 3}})
                 for i in range(12)]
        with open(os.path.join(tmp, "in.jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n\n")
        batch = [binary, "batch", "--model", tiny_rec, "--input", os.path.join(tmp, "in.jsonl"),
                 "--output", os.path.join(tmp, "out.jsonl")]
        code, out, err = run(batch, tty=False)
        check("batch exits 0", code == 0, err)
        check("batch reports 12/12 lines", any(l.startswith("batch: 12/12 (100.0%)")
                                               for l in err.splitlines()), repr(err))
        code, out, err = run(batch, tty=True)
        check("batch on a terminal redraws one line", "\rbatch: 12/12 (100.0%)" in err, repr(err))
        code, out, err = run(batch + ["--quiet"], tty=False)
        check("batch --quiet shows no progress", code == 0 and "batch: 12/12" not in err, repr(err))
        check("batch --quiet still prints its summary", "12 lines, 0 failed" in err, repr(err))


if __name__ == "__main__":
    main()
