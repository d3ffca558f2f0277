// fsoracle: receives a FileSync.DiffCopy from a session server with fsutil's own receiver (as the daemon does).
// usage: fsoracle SOCKET DEST key=value...
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/session/filesync"
	"github.com/tonistiigi/fsutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

func main() {
	conn, err := grpc.NewClient("unix:"+os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	md := metadata.MD{}
	for _, kv := range os.Args[3:] {
		k, v, _ := strings.Cut(kv, "=")
		md[k] = append(md[k], v)
	}
	ctx := metadata.NewOutgoingContext(context.Background(), md)
	stream, err := filesync.NewFileSyncClient(conn).DiffCopy(ctx)
	if err != nil {
		panic(err)
	}
	if err := fsutil.Receive(ctx, stream, os.Args[2], fsutil.ReceiveOpt{Differ: fsutil.DiffMetadata}); err != nil {
		fmt.Fprintln(os.Stderr, "receive:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
