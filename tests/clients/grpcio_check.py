"""A real Python grpcio client asks authzd's Check over a channel target.

Usage: grpcio_check.py TARGET TENANT PERSON APPLICATION PRIVILEGE
TARGET is what grpcio dials: `unix:/path/to.sock` or `127.0.0.1:50051`.
Prints `ALLOWED <reason> <revision>` or `DENIED <reason> <revision>`.

No generated stubs: the request and the response are encoded by hand
(proto3 wire format of the few fields used), and the call is a generic unary
call with bytes in and bytes out, so only `grpcio` is needed.
"""
import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string_field(number, text):
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def parse(buf):
    """The varint fields of a message: number -> value (others skipped)."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number], i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
    return fields


# authzd.v1.CheckRequest: tenant = 1, person = 2, application = 3, privilege = 6.
# authzd.v1.CheckResponse: allowed = 1, reason = 2, revision = 3.
# authzd.v1.Reason, in number order.
REASONS = [
    "REASON_UNSPECIFIED",
    "REASON_ALLOWED",
    "REASON_OPEN_WHEN_UNCONFIGURED",
    "REASON_UNKNOWN_TENANT",
    "REASON_NOT_LOADED",
    "REASON_UNKNOWN_SUBJECT",
    "REASON_DISABLED_SUBJECT",
    "REASON_UNKNOWN_OBJECT",
    "REASON_CROSS_TENANT",
    "REASON_UNKNOWN_APPLICATION",
    "REASON_UNKNOWN_PRIVILEGE",
    "REASON_PARTITION",
    "REASON_EXPLICIT_DENY",
    "REASON_NO_GRANT",
    "REASON_MISSING_PRIVILEGE",
    "REASON_UNMET_DEPENDENCY",
    "REASON_RESTRICTED_MODE",
    "REASON_INVALID_REQUEST",
    "REASON_INTERNAL",
]


def main():
    target, tenant, person, application, privilege = sys.argv[1:6]
    request = (
        string_field(1, tenant)
        + string_field(2, person)
        + string_field(3, application)
        + string_field(6, privilege)
    )
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/authzd.v1.DecisionService/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        reply = parse(check(request, timeout=10))
    allowed = reply.get(1, 0) == 1
    reason = reply.get(2, 0)
    print("ALLOWED" if allowed else "DENIED", REASONS[reason] if reason < len(REASONS) else reason, reply.get(3, 0))


if __name__ == "__main__":
    main()
