// The grpc-go client of bench/capture-headers.sh: one DoFormat call, as grpc-go sends it by
// default (no compressor; no deadline, unless one is given, as production code sets one), the
// message passed as raw bytes so no generated code is needed.
// Usage: grpc_go_client HOST:PORT [DEADLINE, e.g. 10s]
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// rawCodec sends and receives messages as the bytes they are.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                                { return "proto" }

func main() {
	encoding.RegisterCodec(rawCodec{})
	conn, err := grpc.Dial(os.Args[1], grpc.WithInsecure())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	// example.Data{text: "hello,world!"}
	request := append([]byte{0x0a, 12}, "hello,world!"...)
	ctx := context.Background()
	if len(os.Args) > 2 {
		deadline, err := time.ParseDuration(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, deadline)
		defer cancel()
	}
	var reply []byte
	if err := conn.Invoke(ctx, "/example.FormatData/DoFormat", &request, &reply); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("reply: %q\n", reply)
}
