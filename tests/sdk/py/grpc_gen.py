"""Python modules generated from Centrifugo's .proto files (crates/server/vendor/centrifugo) with
grpcio-tools, as a backend team would generate them: the tests use them unchanged."""

import importlib
import os
import sys
import tempfile

import pytest

PROTO_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "crates", "server", "vendor", "centrifugo"))
_OUT = None


def generated(name):
    """`(name_pb2, name_pb2_grpc)` for vendor/centrifugo/<name>.proto, generated once per process."""
    global _OUT
    try:
        from grpc_tools import protoc
    except ImportError:
        pytest.fail("grpcio-tools missing: pip install -r tests/sdk/requirements.txt")
    if _OUT is None:
        _OUT = tempfile.mkdtemp(prefix="wshub-grpc-gen-")
        sys.path.insert(0, _OUT)
    if not os.path.exists(os.path.join(_OUT, f"{name}_pb2.py")):
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={_OUT}", f"--grpc_python_out={_OUT}", os.path.join(PROTO_DIR, f"{name}.proto")])
        assert rc == 0, f"protoc failed on {name}.proto"
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")
