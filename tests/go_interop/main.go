// Go peers of the reqctx echo service (issue 21, section 3: interop), built
// with Debian's grpc-go 1.33, genproto and golang/protobuf 1.3 in GOPATH mode
// (tests/go_interop/build.sh), no code generated from reqctx's protos.
//
//	go_interop_peer --mode=hop --next=127.0.0.1:PORT [--details=pass|drop|add]
//
// A pass-through middle hop as a Go service would write one: a grpc-go
// server whose grpc.UnknownServiceHandler forwards every call (any method,
// any streaming shape, messages as raw bytes) to --next on the incoming
// call's context, so the caller's deadline and cancellation cross, with the
// incoming metadata copied to the outgoing call (metadata.NewOutgoingContext:
// traceparent, baggage, reqctx-ledger...). The next hop's error status comes
// back with its details (--details=pass), without them (drop: a hop that
// rebuilds the status from code and message), or with a google.rpc.ErrorInfo
// of its own appended (add: domain "go-hop.example"). Prints "listening on
// 127.0.0.1:PORT", then per call "hop METHOD budget_ms=N traceparent=T
// baggage=B ledger=L" (budget_ms -1: no deadline) and "hop-status CODE
// details=N" when it ends.
//
//	go_interop_peer --mode=client --target=127.0.0.1:PORT [--timeout_ms=N]
//	    [--work_ms=N] [--ledger] [--cancel_on_signal] [--traceparent=T]
//
// An echo.v1.Echo/Echo client that decodes the status details with grpc-go's
// standard status package and genproto's errdetails. Prints "status CODE:
// MESSAGE", one "detail TYPE_URL" per google.rpc.Status detail, then
// "errorinfo domain=D reason=R hop=H", "debuginfo entries=E detail=LINE" and
// "ledger-any bytes=N" for what it decoded, and "client done". With
// --cancel_on_signal, SIGUSR1 cancels the call (a cancel mid-call).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang/protobuf/proto"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var (
	mode        = flag.String("mode", "", "hop or client")
	next        = flag.String("next", "", "hop: host:port calls are forwarded to")
	details     = flag.String("details", "pass", "hop: pass, drop or add")
	target      = flag.String("target", "", "client: host:port to call")
	timeoutMs   = flag.Int64("timeout_ms", 0, "client: the call's deadline (0: none)")
	workMs      = flag.Int64("work_ms", 0, "client: EchoRequest.work_ms")
	ledger      = flag.Bool("ledger", false, "client: send reqctx-ledger: always")
	cancelOnSig = flag.Bool("cancel_on_signal", false, "client: cancel the call on SIGUSR1")
	traceparent = flag.String("traceparent", "", "client: traceparent to send")
	boundS      = flag.Int64("bound_s", 60, "the process exits after this long whatever happens")
)

// out serialises output lines (calls end on their own goroutines).
var outMu sync.Mutex

func say(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(format+"\n", args...)
}

// frame is a message as the bytes on the wire: the hop never parses them.
type frame struct{ b []byte }

// rawCodec moves frames unchanged. Its name is "proto", so the calls keep
// the content-type application/grpc+proto a protobuf peer expects.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return v.(*frame).b, nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	f := v.(*frame)
	f.b = append(f.b[:0], data...)
	return nil
}
func (rawCodec) Name() string   { return "proto" }
func (rawCodec) String() string { return "proto" }

type hop struct{ conn *grpc.ClientConn }

// outgoing: the incoming metadata a Go service would forward; gRPC's own
// headers (pseudo-headers, grpc-*, content-type, user-agent, te) are the
// transport's to set.
func outgoing(md metadata.MD) metadata.MD {
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") ||
			k == "content-type" || k == "user-agent" || k == "te" {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return "-"
}

func (h *hop) handle(_ interface{}, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	in, _ := metadata.FromIncomingContext(ss.Context())
	budget := int64(-1)
	if d, ok := ss.Context().Deadline(); ok {
		budget = time.Until(d).Milliseconds()
	}
	say("hop %s budget_ms=%d traceparent=%s baggage=%s ledger=%s", method,
		budget, first(in, "traceparent"), first(in, "baggage"),
		first(in, "reqctx-ledger"))
	err := h.forward(method, in, ss)
	st := status.Convert(err)
	say("hop-status %s details=%d", st.Code(), len(st.Proto().GetDetails()))
	return err
}

// forward relays one call to the next hop and returns its status (as
// --details says).
func (h *hop) forward(method string, in metadata.MD, ss grpc.ServerStream) error {
	ctx, cancel := context.WithCancel(
		metadata.NewOutgoingContext(ss.Context(), outgoing(in)))
	defer cancel()
	cs, err := h.conn.NewStream(ctx,
		&grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method,
		grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return h.status(err)
	}
	// Requests: caller -> next hop, half-closing when the caller does.
	go func() {
		for {
			f := &frame{}
			if err := ss.RecvMsg(f); err != nil {
				if err == io.EOF {
					cs.CloseSend()
				}
				return // Otherwise the call is over: ctx ends the outbound.
			}
			if cs.SendMsg(f) != nil {
				return // The next hop ended the call: RecvMsg below says why.
			}
		}
	}()
	// Responses: next hop -> caller.
	if hdr, err := cs.Header(); err == nil && len(hdr) > 0 {
		ss.SendHeader(hdr)
	}
	for {
		f := &frame{}
		err := cs.RecvMsg(f)
		if err == io.EOF {
			ss.SetTrailer(cs.Trailer())
			return nil
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			return h.status(err)
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}

// status: the next hop's error as this hop returns it.
func (h *hop) status(err error) error {
	st := status.Convert(err)
	switch *details {
	case "drop":
		return status.New(st.Code(), st.Message()).Err()
	case "add":
		withOwn, werr := st.WithDetails(&errdetails.ErrorInfo{
			Domain:   "go-hop.example",
			Reason:   "PROXIED",
			Metadata: map[string]string{"hop": "go"},
		})
		if werr != nil {
			return err
		}
		return withOwn.Err()
	}
	return err
}

func runHop() error {
	if *next == "" {
		return fmt.Errorf("--next is required")
	}
	conn, err := grpc.Dial(*next, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h := &hop{conn: conn}
	srv := grpc.NewServer(grpc.CustomCodec(rawCodec{}),
		grpc.UnknownServiceHandler(h.handle))
	say("listening on %s", lis.Addr())
	return srv.Serve(lis)
}

// echoRequest: echo.v1.EchoRequest{message, work_ms} in protobuf wire form
// (proto/echo.proto's field numbers).
func echoRequest(message string, work int64) []byte {
	b := proto.NewBuffer(nil)
	b.EncodeVarint(1<<3 | 2)
	b.EncodeStringBytes(message)
	if work != 0 {
		b.EncodeVarint(2<<3 | 0)
		b.EncodeVarint(uint64(work))
	}
	return b.Bytes()
}

func runClient() error {
	conn, err := grpc.Dial(*target, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if *timeoutMs > 0 {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*timeoutMs)*time.Millisecond)
		defer cancel()
	}
	var md []string
	if *ledger {
		md = append(md, "reqctx-ledger", "always")
	}
	if *traceparent != "" {
		md = append(md, "traceparent", *traceparent)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, md...)
	if *cancelOnSig {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR1)
		go func() {
			<-sig
			cancel()
		}()
	}
	resp := &frame{}
	err = conn.Invoke(ctx, "/echo.v1.Echo/Echo",
		&frame{echoRequest("go client", *workMs)}, resp, grpc.ForceCodec(rawCodec{}))
	st := status.Convert(err)
	say("status %s: %s", st.Code(), st.Message())
	for _, a := range st.Proto().GetDetails() {
		say("detail %s", a.GetTypeUrl())
		if a.GetTypeUrl() == "type.googleapis.com/reqctx.v1.BudgetLedger" {
			// No Go code for reqctx.v1 here: it stays an opaque Any.
			say("ledger-any bytes=%d", len(a.GetValue()))
		}
	}
	// The standard way: Details() unpacks every registered type.
	for _, d := range st.Details() {
		switch m := d.(type) {
		case *errdetails.ErrorInfo:
			say("errorinfo domain=%s reason=%s hop=%s", m.GetDomain(),
				m.GetReason(), m.GetMetadata()["hop"])
		case *errdetails.DebugInfo:
			say("debuginfo entries=%s detail=%s",
				strings.Join(m.GetStackEntries(), ","), m.GetDetail())
		}
	}
	say("client done")
	return nil
}

func main() {
	flag.Parse()
	// A hard bound on the process, whatever the test does.
	time.AfterFunc(time.Duration(*boundS)*time.Second, func() {
		say("bound reached")
		os.Exit(2)
	})
	var err error
	switch *mode {
	case "hop":
		err = runHop()
	case "client":
		err = runClient()
	default:
		err = fmt.Errorf("--mode must be hop or client")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_interop_peer:", err)
		os.Exit(1)
	}
}
