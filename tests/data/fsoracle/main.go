// fsoracle: fsutil's own side of a session's DiffCopy, as the daemon runs it.
// usage: fsoracle SOCKET DEST key=value...       receives a FileSync.DiffCopy with fsutil.Receive
//        fsoracle send SOCKET SRC key=value...   sends SRC over FileSend.DiffCopy with fsutil.Send
//                                                (exporter/local's filesync.CopyToCaller)
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
	send := os.Args[1] == "send"
	args := os.Args[1:]
	if send {
		args = args[1:]
	}
	conn, err := grpc.NewClient("unix:"+args[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	md := metadata.MD{}
	for _, kv := range args[2:] {
		k, v, _ := strings.Cut(kv, "=")
		md[k] = append(md[k], v)
	}
	ctx := metadata.NewOutgoingContext(context.Background(), md)
	if send {
		fs, err := fsutil.NewFS(args[1])
		if err != nil {
			panic(err)
		}
		cc, err := filesync.NewFileSendClient(conn).DiffCopy(ctx)
		if err != nil {
			panic(err)
		}
		if err := fsutil.Send(ctx, cc, fs, nil); err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
			os.Exit(1)
		}
		fmt.Println("ok")
		return
	}
	stream, err := filesync.NewFileSyncClient(conn).DiffCopy(ctx)
	if err != nil {
		panic(err)
	}
	if err := fsutil.Receive(ctx, stream, args[1], fsutil.ReceiveOpt{Differ: fsutil.DiffMetadata}); err != nil {
		fmt.Fprintln(os.Stderr, "receive:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
