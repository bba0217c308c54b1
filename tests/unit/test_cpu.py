"""The default thread count's arithmetic (lmboard/cpu.py), and its clock against a busy process."""

import subprocess
import sys
import time

from lmboard import cpu


def test_idle_cores_leave_a_core_to_a_process_that_keeps_it_busy():
    assert cpu.idle_cores(2, 1.0) == 1 and cpu.idle_cores(2, 0.6) == 1
    assert cpu.idle_cores(2, 0.3) == 2  # background noise is not a busy core
    assert cpu.idle_cores(1, 1.0) == 1 and cpu.idle_cores(8, 2.2) == 6


def test_the_clock_counts_other_processes_not_this_one():
    cpu.start()
    t = time.monotonic()
    while time.monotonic() - t < 0.3:  # this process busy: not counted
        pass
    alone = cpu.busy_others()
    hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 5\nwhile time.time() < end:\n    pass\n"])
    try:
        time.sleep(0.3)  # its start
        cpu.start()
        busy = cpu.busy_others(0.5)
    finally:
        hog.kill()
        hog.wait()
    assert busy > alone + 0.5, (alone, busy)  # the busy process adds about one core
