"""BuildKit's Control API messages (control, worker, ops .proto) and their protoc output (scripts/gen-protos.sh)."""
