/// aTLS over NIOSSL and the gRPC transports that use it.
