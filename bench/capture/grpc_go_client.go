// The grpc-go client of bench/capture-headers.sh: one DoFormat call, as grpc-go sends it by
// default (no deadline, no compressor), the message passed as raw bytes so no generated code is
// needed. Usage: grpc_go_client HOST:PORT
package main

import (
	"context"
	"fmt"
	"os"

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
	var reply []byte
	if err := conn.Invoke(context.Background(), "/example.FormatData/DoFormat", &request, &reply); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("reply: %q\n", reply)
}
