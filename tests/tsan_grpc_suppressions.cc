// ThreadSanitizer suppressions for gRPC's own header templates (and one
// libstdc++ std::stop_callback defect, below).
//
// Why: Debian's gRPC is not instrumented, and ignore_noninstrumented_modules
// hides its libraries -- but gRPC's header templates (CallOpSet,
// CallbackUnaryHandler, ...) are compiled into our instrumented objects.
// Their state is handed between threads through gRPC core's completion
// queues, whose synchronization TSan cannot see, so it reports races between
// two gRPC template frames (e.g. CallOpSet::ContinueFinalizeResultAfterInterception
// writing done_intercepting_ and CallOpSet::FinalizeResult reading it on the
// thread that receives the completion). Every entry is `race_top:` -- only a
// report whose top frame is in one of these gRPC templates is suppressed, so
// a race in reqctx code (top frame ours) is still reported. One exception:
// with an interceptor, a callback-API client's callback may run on another
// thread than the one that parsed the response into the caller's message
// (gRPC core hands it over), so races whose stack contains gRPC's
// CallOpRecvMessage -- gRPC writing a received message -- are suppressed too.
// Likewise on the server: a callback handler that finishes from its own
// thread has gRPC serialize the response there (CallOpSendMessage) and
// destroy it on the thread that completes the call.
// ServerUnaryReactor guards its binding and a Finish() from another thread
// with reactor_mu_, a grpc::internal::Mutex (absl::Mutex, invisible to TSan).
// Likewise gRPC stores a unary call's std::function callback on the caller's
// thread and invokes it on its own: the read of reqctx's coroutine-call
// callback object (//async:grpc_call, GrpcCallAwaiter::Done) inside
// std::function's invoker is suppressed (top frame only; what Done does is
// still checked), and so is gRPC moving that std::function out of its tag on
// its thread (CallbackWithStatusTag::Run; with -O1 -g the inlined move
// constructor is the top frame).
//
// Linked (alwayslink) into the test binaries that run gRPC; TSan reads this
// hook at startup. Harmless in non-TSan builds.
extern "C" const char* __tsan_default_suppressions() {
  return "race_top:grpc::internal::CallOpSet<\n"
         "race_top:grpc::internal::CallbackUnaryHandler<\n"
         "race_top:grpc::internal::CallbackServerStreamingHandler<\n"
         "race_top:grpc::internal::ClientCallbackUnaryImpl\n"
         "race_top:grpc::internal::ClientCallbackReaderImpl<\n"
         "race_top:grpc::internal::CallbackWithStatusTag\n"
         "race_top:grpc::internal::CallbackWithSuccessTag\n"
         "race_top:grpc::internal::InterceptorBatchMethodsImpl\n"
         // gRPC's virtual call of a client interceptor (its vptr read) on
         // the thread gRPC core handed the batch to (a callback stream's
         // first batch), the interceptor constructed on the caller's thread
         // by the factory. Seen once the client interceptor's block is no
         // longer reused from a previous one of the same class (TSan skips
         // a vptr store of the value already there). Top frame only: what
         // Intercept does is still checked.
         "race_top:grpc::experimental::ClientRpcInfo::RunInterceptor\n"
         "race_top:grpc::ServerUnaryReactor::\n"
         // The same binding, when the top frame is the grpc::Status move
         // inlined into InternalBindCall (a Finish() from the handler's
         // own thread before the bind: gRPC moves the backlogged status
         // under reactor_mu_).
         "race:grpc::ServerUnaryReactor::InternalBindCall\n"
         // The same for the streaming reactors (//streams' tests start
         // reads and writes from a thread of their own, before the reactor
         // is bound: gRPC keeps them in a backlog under its absl mutex).
         "race_top:grpc::ServerWriteReactor<\n"
         "race_top:grpc::ServerReadReactor<\n"
         "race_top:grpc::ServerBidiReactor<\n"
         "race_top:grpc::internal::ClientCallbackWriterImpl<\n"
         "race_top:grpc::internal::ClientCallbackReaderWriterImpl<\n"
         "race_top:grpc::internal::CallbackClientStreamingHandler<\n"
         "race_top:grpc::internal::CallbackBidiHandler<\n"
         "race:grpc::internal::CallOpSendMessage::SendMessagePtr<\n"
         // A callback unary call's request and response live in gRPC's
         // DefaultMessageHolder, built where the request is deserialized
         // (gRPC's nexting thread) and destroyed by CallOnDone on the
         // executor thread that completes the call (seen when a call ends
         // by its deadline while its handler runs: adaptive_policy_server_
         // test's short-deadline flood); gRPC core orders the two.
         "race:grpc::internal::DefaultMessageHolder<\n"
         "race:grpc::internal::CallOpRecvMessage<\n"
         "race_top:std::_Function_handler<void (grpc::Status), "
         "reqctx::internal::GrpcCallAwaiter::Done>\n"
         // The same hand-over for a test's own callback given to a stub's
         // async() unary call: the std::function is stored by the calling
         // thread inside gRPC's CallbackUnaryCallImpl and invoked on gRPC's
         // nexting thread (causes_test OutboundCauseTest, seen under load).
         // Top frame only: the lambda's own body is still checked.
         "race_top:std::_Function_handler<void (grpc::Status), "
         "reqctx::testing::\n"
         "race_top:std::function<void (grpc::Status)>::function("
         "std::function<void (grpc::Status)>&&)\n"
         // libstdc++'s std::stop_callback destructor decides whether its
         // callback ran on "this thread" by comparing std::thread::id: when
         // the thread that requested the stop has exited and a new thread
         // (here an executor worker running WithStopToken's cleanup) got the
         // same id, it reads the callback record without acquiring the
         // semaphore that orders the requester's last write to it (the
         // value read is the one written: the callback has returned). Seen
         // once in waitable_test's ConcurrentRequestAndCancel. Only a report
         // whose top frame is that destruction is suppressed.
         "race_top:std::stop_token::_Stop_state_t::_M_remove_callback\n"
         "race_top:reqctx::(anonymous namespace)::StopWatch::Run\n"
         // gRPC's own executor threads (grpc_core::Thread) may still be
         // finishing when a test process exits: a leak report about a thread
         // reqctx never created. reqctx's own threads are not matched.
         "thread:grpc_core::Thread::Thread\n";
}
