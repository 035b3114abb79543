#!/usr/bin/env python3
"""Constellation's bootstrapper side of join.API, independent of Asterism's Swift code: Python grpcio
with Constellation's schema (constellation_join.proto, compiled here by protoc). It speaks plaintext
HTTP/2 to a local relay that carries the connection over aTLS. Prints the answer as one JSON object
(bytes as hex), or {"error": ..., "code": ...} with exit status 1.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--call", choices=["join", "rejoin"], required=True)
    parser.add_argument("--disk-uuid", required=True)
    parser.add_argument("--csr-hex", default="")
    args = parser.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    out = tempfile.mkdtemp(prefix="constellation-pb-")
    subprocess.run(["protoc", f"-I{here}", f"--python_out={out}", "constellation_join.proto"], check=True)
    sys.path.insert(0, out)
    import constellation_join_pb2 as pb

    channel = grpc.insecure_channel(f"127.0.0.1:{args.port}")
    try:
        if args.call == "join":
            call = channel.unary_unary(
                "/join.API/IssueJoinTicket",
                request_serializer=pb.IssueJoinTicketRequest.SerializeToString,
                response_deserializer=pb.IssueJoinTicketResponse.FromString,
            )
            request = pb.IssueJoinTicketRequest(
                disk_uuid=args.disk_uuid, certificate_request=bytes.fromhex(args.csr_hex), is_control_plane=False
            )
            response = call(request, timeout=float(os.environ.get("CALL_TIMEOUT", "60")))
            print(json.dumps({
                "state_disk_key": response.state_disk_key.hex(),
                "measurement_salt": response.measurement_salt.hex(),
                "measurement_secret": response.measurement_secret.hex(),
                "api_server_endpoint": response.api_server_endpoint,
                "token": response.token,
                "discovery_token_ca_cert_hash": response.discovery_token_ca_cert_hash,
                "kubernetes_version": response.kubernetes_version,
            }))
        else:
            call = channel.unary_unary(
                "/join.API/IssueRejoinTicket",
                request_serializer=pb.IssueRejoinTicketRequest.SerializeToString,
                response_deserializer=pb.IssueRejoinTicketResponse.FromString,
            )
            response = call(pb.IssueRejoinTicketRequest(disk_uuid=args.disk_uuid), timeout=float(os.environ.get("CALL_TIMEOUT", "60")))
            print(json.dumps({
                "state_disk_key": response.state_disk_key.hex(),
                "measurement_secret": response.measurement_secret.hex(),
            }))
    except grpc.RpcError as error:
        print(json.dumps({"error": error.details(), "code": error.code().name}))
        return 1
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
