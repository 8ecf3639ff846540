"""How programs speak to Modelport: the REST API (`/api/v1`), the Open Inference Protocol v2 over HTTP
(`oip`) and gRPC (`grpc_service`), and the OpenAI-compatible `/v1`. Each turns its requests into the same
calls of `inference.services` and its outcomes into its own answers."""
