"""The terminal a person watches: Reverb's per-sampler lines, TF start-up notices and Beam's
apitools warning stay out of standard error unless `--verbose`; everything else still reaches it."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLER_LINE = "Sampler and server are owned by the same process"


def run_together(*commands) -> list[subprocess.CompletedProcess]:
    """Runs the commands side by side (each is mostly one thread importing) and checks they succeed."""
    procs = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO) for args in commands]
    done = []
    try:
        for args, proc in zip(commands, procs):
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return done


def test_reverb_iterator_lines_hidden_unless_verbose():
    """A real command that serves a Reverb table and samples it through a tf.data iterator."""
    command = [str(REPO / "tools" / "benchmark_replay.py"), "--transitions=100", "--episode_length=20",
               "--batches=2", "--batch=4", "--embedding=4"]
    quiet, verbose = run_together(command, command + ["--verbose"])
    assert "Reverb / numpy" in quiet.stdout  # the command did its work
    assert SAMPLER_LINE not in quiet.stderr and "[reverb/cc/" not in quiet.stderr, quiet.stderr
    assert "cpu_feature_guard" not in quiet.stderr
    assert SAMPLER_LINE in verbose.stderr and "Started replay server" in verbose.stderr, verbose.stderr


def test_filter_keeps_everything_else():
    """C-level writes to descriptor 2 other than the noise pass, in order; so do Python warnings
    and a traceback; Beam's apitools warning is dropped; a last line without newline is kept."""
    code = (
        "import logging, os\n"
        "from vlarft.agents.terminal import quiet_terminal\n"
        "quiet_terminal()\n"
        "os.write(2, b'first kept\\n[reverb/cc/client.cc:165] Sampler and server are owned by the same process "
        "(1) so Table t is accessed directly without gRPC.\\nsecond kept\\n')\n"
        "logging.warning('apitools not found, and bigquery client libraries are not available')\n"
        "logging.warning('a real warning')\n"
        "os.write(2, b'tail without newline')\n"
        "raise RuntimeError('boom')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr
    assert "first kept\nsecond kept\n" in err, err
    assert SAMPLER_LINE not in err and "apitools" not in err
    assert "a real warning" in err and "RuntimeError: boom" in err and "tail without newline" in err
