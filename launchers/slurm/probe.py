"""Checks of the Slurm launchers that need Python (the standard library; Ray for `ray-nodes`).

    python probe.py ports IP NAME=PORT...     exit 64 naming the first port already in use on IP
    python probe.py ray-nodes ADDRESS TIMEOUT_S SETTING NODE=IP...
                                              exit 0 once every IP is an alive node of the Ray cluster
                                              at ADDRESS, or 69 after TIMEOUT_S naming the missing ones
                                              (and SETTING, the variable that holds the bound)
"""
import os
import socket
import sys
import time

EX_USAGE, EX_UNAVAILABLE = 64, 69


def check_ports(ip: str, named_ports) -> int:
    for name, port in named_ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((ip, int(port)))
            except OSError as error:
                print(f"port {port} ({name}) on {ip} is already in use ({error.strerror}): another Ray or "
                      f"service holds it; set {name} to a free port", file=sys.stderr)
                return EX_USAGE
    return 0


def wait_for_nodes(address: str, timeout_s: float, setting: str, expected) -> int:
    """Waits for the GCS port, connects, then waits until every expected IP is an alive node."""
    deadline = time.monotonic() + timeout_s

    def give_up(what: str) -> int:
        print(f"{what} within {timeout_s:.0f} s ({setting})", file=sys.stderr)
        return EX_UNAVAILABLE

    host, port = address.rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                return give_up(f"the Ray head did not open {address}")
            time.sleep(1.0)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    alive, error = set(), None
    while True:
        # The head may still be registering, or restarting (ray_node.sh retries a failed start):
        # connect again whenever asking fails.
        try:
            if not ray.is_initialized():
                ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
            alive, error = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}, None
        except Exception as failure:  # noqa: BLE001 (Ray raises several kinds while a node starts)
            error = failure
            ray.shutdown()
        missing = [(name, ip) for name, ip in expected if ip not in alive]
        if not missing:
            ray.shutdown()
            return 0
        if time.monotonic() > deadline:
            ray.shutdown()
            names = ", ".join(f"{name} ({ip})" for name, ip in missing)
            seen = f"joined: {', '.join(sorted(alive)) or 'none'}" + (f"; last error: {error}" if error else "")
            return give_up(f"{names} did not join the Ray cluster at {address} ({seen})")
        time.sleep(1.0)


def main(argv) -> int:
    if len(argv) >= 2 and argv[0] == "ports":
        return check_ports(argv[1], [pair.split("=", 1) for pair in argv[2:]])
    if len(argv) >= 4 and argv[0] == "ray-nodes":
        return wait_for_nodes(argv[1], float(argv[2]), argv[3], [pair.split("=", 1) for pair in argv[4:]])
    print(__doc__, file=sys.stderr)
    return EX_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
