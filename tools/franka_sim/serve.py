"""Run franka-sim on loopback only, offline, in the foreground, until SIGTERM or Ctrl-C.

`make franka-sim` runs this with the franka-sim venv's python. It

* builds (once) a mesh-free FR3 MJCF from the URDF franka-sim ships and points `$FR3_MJCF` at it,
  because the stock start git-clones MuJoCo Menagerie at run time (see build_mjcf.py);
* serves the arm on 127.0.0.1:1337 and the hand on 127.0.0.1:1338. The stock CLI binds 0.0.0.0
  and has no host flag, so this builds `FrankaSimServer(host="127.0.0.1")` itself, and binds every
  IPv4 UDP socket the process opens to 127.0.0.1 (the sim's UDP state socket is otherwise left
  unbound and lands on the wildcard address at its first `sendto`);
* enforces the FCI motion limits (a command that breaks them aborts with a reflex, as on a real arm;
  `--no-enforce-motion-limits` turns that off);
* prints `franka-sim ready on 127.0.0.1:1337 (gripper 1338)` once it serves, and turns SIGTERM and
  SIGINT into one clean `server.stop()`.

The sim logs "Server ready for new client connection..." every second at INFO: `--log FILE` sends
its log (INFO) there; without it only warnings reach stderr.
"""
import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

HOST, PORT = "127.0.0.1", 1337          # libfranka clients cannot pick another port; the hand is PORT + 1


class _LoopbackSocket(socket.socket):
    "A socket.socket whose new IPv4 UDP sockets are bound to 127.0.0.1 from the start."
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        super().__init__(family, type, proto, fileno)
        if fileno is None and self.family == socket.AF_INET and self.type == socket.SOCK_DGRAM:
            self.bind((HOST, 0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mjcf", type=Path, default=Path(os.environ.get("FRANKA_SIM_OFFLINE_MJCF", Path(sys.prefix) / "fr3_offline.xml")),
                   help="where the offline FR3 MJCF is built (once) and read; default: inside this venv")
    p.add_argument("--log", type=Path, default=None, help="write the sim's INFO log to this file")
    p.add_argument("--no-gripper", action="store_true", help="serve no hand on port 1338")
    p.add_argument("--gripper-object-width", type=float, default=None,
                   help="width (m) of a virtual object between the fingers, so that a grasp of that width succeeds")
    p.add_argument("--no-enforce-motion-limits", dest="enforce_motion_limits", action="store_false",
                   help="do not abort motions that break the FCI limits (by default they abort with a reflex, as on a real arm)")
    p.add_argument("--enforce-comm-constraints", action="store_true", help="abort motions after lost command cycles")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started this one is gone (so a killed test run leaves no sim behind)")
    args = p.parse_args(argv)

    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(filename=str(args.log), level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format="franka-sim %(levelname)s %(name)s: %(message)s")

    if not args.mjcf.exists():
        from build_mjcf import build
        build(args.mjcf)
    os.environ["FR3_MJCF"] = str(args.mjcf)
    os.environ.pop("DISPLAY", None)
    os.environ.setdefault("MUJOCO_GL", "disable")
    socket.socket = _LoopbackSocket       # before franka_sim creates any socket

    from franka_sim import FrankaSimServer
    server = FrankaSimServer(host=HOST, port=PORT, enable_vis=False, enable_gripper=not args.no_gripper,
                             gripper_object_width=args.gripper_object_width,
                             enforce_motion_limits=args.enforce_motion_limits,
                             enforce_comm_constraints=args.enforce_comm_constraints or None)
    stopping = threading.Event()

    def on_signal(signum, frame):
        if not stopping.is_set():
            stopping.set()
            print(f"franka-sim: {signal.Signals(signum).name}, stopping", flush=True)
            server.stop()                 # ends the physics loop that server.start() runs in this thread

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def announce():
        gripper = server.gripper_server
        deadline = time.monotonic() + 60
        while not stopping.is_set() and time.monotonic() < deadline:
            if server.running and server.physics_sim.running and (gripper is None or gripper.running):
                print(f"franka-sim ready on {HOST}:{PORT}" + ("" if gripper is None else f" (gripper {PORT + 1})"), flush=True)
                return
            time.sleep(0.05)
    threading.Thread(target=announce, daemon=True).start()

    if args.exit_with_parent:
        parent = os.getppid()

        def watch_parent():
            while not stopping.wait(0.5):
                if os.getppid() != parent:            # re-parented: the starter died
                    print("franka-sim: the parent process is gone, stopping", flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
        threading.Thread(target=watch_parent, daemon=True).start()

    try:
        server.start()                    # blocks: the physics loop, paced to wall-clock time
    finally:
        stopping.set()
        server.stop()                     # idempotent
    print("franka-sim stopped", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
