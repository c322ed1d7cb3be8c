// Command ttrpcpeer is the Go side of runwasi-py's ttrpc interop tests and benchmarks.
//
// It is built against Debian's containerd/ttrpc 1.1.1 in GOPATH mode (see ../build.sh) and
// speaks the Example service (ttrpc.example.v1.Example, ttrpc/example/example.proto) with
// hand-encoded messages, so it needs no generated Go code.
//
//	ttrpcpeer server ADDR          serve Echo, Sleep and Fail on unix socket ADDR until SIGTERM
//	ttrpcpeer client ADDR          run the scripted checks against a server, print JSON results
//	ttrpcpeer bench ADDR CONNS PAYLOAD SECONDS WARMUP
//	                               closed-loop Echo load, one call in flight per connection
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const serviceName = "ttrpc.example.v1.Example"

// raw is a protobuf message carried as its wire bytes; gogo's proto.Marshal and
// proto.Unmarshal use its Marshal/Unmarshal methods.
type raw struct{ b []byte }

func (r *raw) Reset()                   { r.b = nil }
func (r *raw) String() string           { return fmt.Sprintf("raw(%d bytes)", len(r.b)) }
func (r *raw) ProtoMessage()            {}
func (r *raw) Marshal() ([]byte, error) { return r.b, nil }
func (r *raw) Unmarshal(b []byte) error { r.b = append([]byte(nil), b...); return nil }

// --- protobuf wire encoding of the few Example fields -------------------------------------

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendBytes writes a length-delimited field; proto3 omits empty singular fields.
func appendBytes(b []byte, field int, p []byte, repeated bool) []byte {
	if len(p) == 0 && !repeated {
		return b
	}
	b = appendVarint(b, uint64(field)<<3|2)
	b = appendVarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendUint(b []byte, field int, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = appendVarint(b, uint64(field)<<3)
	return appendVarint(b, v)
}

type decoded struct {
	ints map[int]uint64
	bufs map[int][][]byte
}

func readVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad varint")
}

// decode reads varint and length-delimited fields (the only wire types Example uses).
func decode(b []byte) (decoded, error) {
	d := decoded{ints: map[int]uint64{}, bufs: map[int][][]byte{}}
	for len(b) > 0 {
		key, n, err := readVarint(b)
		if err != nil {
			return d, err
		}
		b = b[n:]
		field := int(key >> 3)
		switch key & 7 {
		case 0:
			v, n, err := readVarint(b)
			if err != nil {
				return d, err
			}
			d.ints[field] = v
			b = b[n:]
		case 2:
			l, n, err := readVarint(b)
			if err != nil || uint64(len(b)-n) < l {
				return d, errors.New("bad length")
			}
			d.bufs[field] = append(d.bufs[field], b[n:n+int(l)])
			b = b[n+int(l):]
		default:
			return d, fmt.Errorf("unsupported wire type %d", key&7)
		}
	}
	return d, nil
}

func (d decoded) last(field int) []byte {
	if v := d.bufs[field]; len(v) > 0 {
		return v[len(v)-1]
	}
	return nil
}

func echoRequest(payload []byte, seq uint32) []byte {
	return appendUint(appendBytes(nil, 1, payload, false), 2, uint64(seq))
}

// --- server ------------------------------------------------------------------------------

func echo(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
	var req raw
	if err := unmarshal(&req); err != nil {
		return nil, err
	}
	d, err := decode(req.b)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad EchoRequest: %v", err)
	}
	var md []string
	if m, ok := ttrpc.GetMetadata(ctx); ok {
		for k, vs := range m {
			for _, v := range vs {
				md = append(md, k+"="+v)
			}
		}
	}
	sort.Strings(md)
	out := appendBytes(nil, 1, d.last(1), false)
	out = appendUint(out, 2, uint64(uint32(d.ints[2])))
	for _, kv := range md {
		out = appendBytes(out, 3, []byte(kv), true)
	}
	return &raw{out}, nil
}

func sleep(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
	var req raw
	if err := unmarshal(&req); err != nil {
		return nil, err
	}
	d, err := decode(req.b)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad SleepRequest: %v", err)
	}
	t := time.NewTimer(time.Duration(d.ints[1]) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return &raw{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func fail(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
	var req raw
	if err := unmarshal(&req); err != nil {
		return nil, err
	}
	d, err := decode(req.b)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad FailRequest: %v", err)
	}
	code := int32(d.ints[1])
	if code == 0 {
		return &raw{}, nil
	}
	return nil, status.Error(codes.Code(code), string(d.last(2)))
}

func serve(addr string) error {
	_ = os.Remove(addr)
	l, err := net.Listen("unix", addr)
	if err != nil {
		return err
	}
	s, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	s.Register(serviceName, map[string]ttrpc.Method{"Echo": echo, "Sleep": sleep, "Fail": fail})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()
	fmt.Println("ready")
	err = s.Serve(context.Background(), l)
	if errors.Is(err, ttrpc.ErrServerClosed) {
		return nil
	}
	return err
}

// --- client checks ---------------------------------------------------------------------

type result map[string]interface{}

func dial(addr string, opts ...ttrpc.ClientOpts) (*ttrpc.Client, error) {
	conn, err := net.Dial("unix", addr)
	if err != nil {
		return nil, err
	}
	return ttrpc.NewClient(conn, opts...), nil
}

// call returns the reply bytes and the outcome: code >= 0 is a status code (0 = OK),
// code -1 a local error (its text in errText).
func call(ctx context.Context, c *ttrpc.Client, service, method string, req []byte) ([]byte, result) {
	var out raw
	err := c.Call(ctx, service, method, &raw{req}, &out)
	if err == nil {
		return out.b, result{"code": 0, "message": ""}
	}
	if st, ok := status.FromError(err); ok {
		return out.b, result{"code": int(st.Code()), "message": st.Message()}
	}
	return nil, result{"code": -1, "error": err.Error()}
}

func echoResult(reply []byte, r result) result {
	if r["code"] != 0 {
		return r
	}
	d, err := decode(reply)
	if err != nil {
		r["decode_error"] = err.Error()
		return r
	}
	md := []string{}
	for _, b := range d.bufs[3] {
		md = append(md, string(b))
	}
	r["payload"] = string(d.last(1))
	r["payload_len"] = len(d.last(1))
	r["seq"] = d.ints[2]
	r["metadata"] = md
	return r
}

func runChecks(addr string) ([]result, error) {
	c, err := dial(addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// A client whose requests carry a 100 ms timeout_nano while its own ctx has no deadline:
	// the status that comes back is then the server's answer, not the client's local timeout.
	timed, err := dial(addr, ttrpc.WithUnaryClientInterceptor(
		func(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response,
			_ *ttrpc.UnaryClientInfo, invoker ttrpc.Invoker) error {
			req.TimeoutNano = int64(100 * time.Millisecond)
			return invoker(ctx, req, resp)
		}))
	if err != nil {
		return nil, err
	}
	defer timed.Close()

	bg := context.Background()
	var results []result
	add := func(name string, r result) {
		r["name"] = name
		results = append(results, r)
	}

	add("echo", echoResult(call(bg, c, serviceName, "Echo", echoRequest([]byte("hello from go"), 7))))
	add("echo_empty", echoResult(call(bg, c, serviceName, "Echo", nil)))

	// 32 calls in flight on one connection; replies may come back in any order.
	var wg sync.WaitGroup
	var mu sync.Mutex
	good, bad := 0, []string{}
	for i := 1; i <= 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := []byte("payload-" + strconv.Itoa(i))
			reply, r := call(bg, c, serviceName, "Echo", echoRequest(want, uint32(i)))
			d, err := decode(reply)
			mu.Lock()
			defer mu.Unlock()
			if r["code"] == 0 && err == nil && bytes.Equal(d.last(1), want) && d.ints[2] == uint64(i) {
				good++
			} else {
				bad = append(bad, fmt.Sprintf("call %d: %v", i, r))
			}
		}(i)
	}
	wg.Wait()
	add("concurrent", result{"code": 0, "ok": good, "failures": bad})

	mdCtx := ttrpc.WithMetadata(bg, ttrpc.MD{
		"foo":                        {"bar", "baz"},
		"containerd-namespace-ttrpc": {"default"},
	})
	add("metadata", echoResult(call(mdCtx, c, serviceName, "Echo", echoRequest([]byte("md"), 1))))

	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	_, r := call(ctx, c, serviceName, "Sleep", appendUint(nil, 1, 10))
	cancel()
	add("sleep_ok", r)

	start := time.Now()
	_, r = call(bg, timed, serviceName, "Sleep", appendUint(nil, 1, 5000))
	r["elapsed_ms"] = time.Since(start).Milliseconds()
	add("deadline_server", r)

	ctx, cancel = context.WithTimeout(bg, 100*time.Millisecond)
	_, r = call(ctx, c, serviceName, "Sleep", appendUint(nil, 1, 5000))
	cancel()
	add("deadline_client", r)

	for code := 0; code <= 16; code++ {
		req := appendBytes(appendUint(nil, 1, uint64(code)), 2, []byte("failure "+strconv.Itoa(code)), false)
		_, r = call(bg, c, serviceName, "Fail", req)
		r["want_code"] = code
		add("fail", r)
	}

	_, r = call(bg, c, "nope.v1.Nope", "Echo", echoRequest([]byte("x"), 1))
	add("unknown_service", r)
	_, r = call(bg, c, serviceName, "Nope", echoRequest([]byte("x"), 1))
	add("unknown_method", r)
	_, r = call(bg, c, serviceName, "Echo", []byte{0x0a, 0xff})
	add("bad_payload", r)

	big := bytes.Repeat([]byte("x"), 4194305)
	_, r = call(bg, c, serviceName, "Echo", echoRequest(big, 1))
	add("oversize", r)
	add("after_oversize", echoResult(call(bg, c, serviceName, "Echo", echoRequest([]byte("still here"), 2))))
	return results, nil
}

// --- benchmark ---------------------------------------------------------------------------

func bench(addr string, conns, payload int, seconds, warmup float64) (result, error) {
	clients := make([]*ttrpc.Client, conns)
	for i := range clients {
		c, err := dial(addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[i] = c
	}
	req := echoRequest(bytes.Repeat([]byte("x"), payload), 1)
	startAt := time.Now().Add(time.Duration(warmup * float64(time.Second)))
	stopAt := startAt.Add(time.Duration(seconds * float64(time.Second)))
	lat := make([][]time.Duration, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func(i int, c *ttrpc.Client) {
			defer wg.Done()
			var out raw
			ctx := context.Background()
			for {
				t0 := time.Now()
				if t0.After(stopAt) {
					return
				}
				if err := c.Call(ctx, serviceName, "Echo", &raw{req}, &out); err != nil {
					errs[i] = err
					return
				}
				if t0.After(startAt) {
					lat[i] = append(lat[i], time.Since(t0))
				}
			}
		}(i, c)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds())
	}
	return result{
		"calls":       len(all),
		"seconds":     seconds,
		"calls_per_s": float64(len(all)) / seconds,
		"p50_us":      pct(0.50),
		"p99_us":      pct(0.99),
	}, nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: ttrpcpeer server|client ADDR | bench ADDR CONNS PAYLOAD SECONDS WARMUP")
		os.Exit(2)
	}
	mode, addr := os.Args[1], os.Args[2]
	var err error
	switch mode {
	case "server":
		err = serve(addr)
	case "client":
		var results []result
		if results, err = runChecks(addr); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(results)
		}
	case "bench":
		if len(os.Args) != 7 {
			fmt.Fprintln(os.Stderr, "usage: ttrpcpeer bench ADDR CONNS PAYLOAD SECONDS WARMUP")
			os.Exit(2)
		}
		conns, e1 := strconv.Atoi(os.Args[3])
		payload, e2 := strconv.Atoi(os.Args[4])
		seconds, e3 := strconv.ParseFloat(os.Args[5], 64)
		warmup, e4 := strconv.ParseFloat(os.Args[6], 64)
		for _, e := range []error{e1, e2, e3, e4} {
			if e != nil {
				fmt.Fprintln(os.Stderr, "ttrpcpeer bench:", e)
				os.Exit(2)
			}
		}
		var r result
		if r, err = bench(addr, conns, payload, seconds, warmup); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(r)
		}
	default:
		fmt.Fprintf(os.Stderr, "ttrpcpeer: unknown mode %q\n", mode)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ttrpcpeer:", err)
		os.Exit(1)
	}
}
