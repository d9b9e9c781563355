// Package api holds the protobuf definitions of jfs: the client service
// Meta, the operator service Admin (jfs.proto) and the raft log envelope
// (raftlog.proto). The generated Go code is in api/jfspb and is committed, so
// building needs no protoc.
//
// To regenerate after editing a .proto file, with protoc,
// protoc-gen-go and protoc-gen-go-grpc on PATH:
//
//	go generate ./api/
package api

//go:generate protoc --proto_path=. --go_out=jfspb --go_opt=paths=source_relative --go-grpc_out=jfspb --go-grpc_opt=paths=source_relative jfs.proto raftlog.proto
