// dataplane._grpc_frontend: the gRPC transport of the data plane, in C++.
//
// Why native: with grpcio's Python servers (threaded or asyncio) most of a small call's CPU
// goes to the binding's per-call machinery, several times the cost of the model call itself.
// Here gRPC's C++ core owns HTTP/2, framing, deadlines and flow control on threads that never
// take the GIL. A call whose request message has arrived is put on a queue; ONE Python
// dispatcher thread takes everything queued in one step (one GIL hand-off for many calls),
// decodes, runs and answers. Answers are written from whatever Python thread has them (the
// dispatcher, a batch thread, a pool thread) without waiting on the network.
//
// Why a completion queue and not gRPC's callback API: with the callback API (gRPC 1.51, as
// Debian ships it) every event of a call is handed to a callback thread pool, and a call cost
// ~37 us of server CPU on this machine; one thread polling one completion queue does the same
// work where the event happens, at ~18 us per call (a server answering canned bytes under
// h2load at 32 clients: 26-35k calls/s on 1.3 cores vs 57k on 1.0; docs/performance.md).
//
// The transport is generic: it knows method paths and bytes, never protobuf messages, so the
// Python side keeps using the official tensorflow-serving-api messages.

#include <grpcpp/alarm.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <pybind11/pybind11.h>
#include <pthread.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

namespace py = pybind11;

namespace {

class RpcCall;

// Starts gRPC operations (writes, finishes) on its own thread, in the order they were posted,
// so the Python thread that has an answer hands it over and goes on without the GIL waiting.
class Outbox {
 public:
  Outbox() : thread_([this] { run(); }) {
    pthread_setname_np(thread_.native_handle(), "grpc-writer");  // as `top -H` shows it
  }

  ~Outbox() { stop(); }

  // Start every job posted so far, then refuse new ones (the server is gone: nothing could
  // start on it any more).
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    ready_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      std::deque<std::function<void()>> jobs;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [this] { return closed_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // closed, and nothing left to start
        jobs.swap(jobs_);
      }
      for (auto& job : jobs) job();
    }
  }

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  bool closed_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// What Python holds of one call. It outlives the RpcCall (deleted once gRPC is done with the
// call and no operation is in flight), so every use of `rpc` checks it under `mu`.
struct CallState {
  std::mutex mu;
  RpcCall* rpc = nullptr;       // null once gRPC is done with the call
  int operations = 0;           // tags of `rpc` still to come back from the queue
  bool finish_started = false;  // an answer (or the call's end) has been decided
  bool dispatched = false;      // Python has been handed the call
  bool write_in_flight = false;
  bool finish_after_writes = false;
  std::deque<std::string> pending_writes;
  grpc::ByteBuffer write_buffer;  // must live until its write completes
  std::atomic<bool> cancelled{false};
  std::uint64_t id = 0;
  std::string method;
  std::string request;
  std::chrono::system_clock::time_point deadline = std::chrono::system_clock::time_point::max();
  Outbox* outbox = nullptr;  // owned by the Frontend, which outlives every call
};

using CallPtr = std::shared_ptr<CallState>;

grpc::ByteBuffer to_buffer(const std::string& bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

std::string from_buffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  out.reserve(buffer.Length());
  for (const auto& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// Calls (and cancellations of dispatched calls) waiting for the Python dispatcher.
class CallQueue {
 public:
  explicit CallQueue(std::chrono::microseconds spin) : spin_(spin) {}

  void push(CallPtr call) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(std::move(call));
      size_.store(items_.size(), std::memory_order_release);
    }
    ready_.notify_one();
  }

  // Everything queued, waiting while there is nothing; empty only once closed.
  //
  // Under light load (the last take found one call) the consumer first spins for `spin_`
  // without the lock before it sleeps: on a VM an idle vCPU wakes slowly and runs cold, and
  // the futex wake-up is a hop of its own. Measured at one client: p50 halved (trivial model
  // 0.25-0.33 -> 0.11-0.13 ms). Under load takes find several calls, so nobody spins and the
  // CPU stays with the threads that produce calls.
  std::deque<CallPtr> take_all() {
    if (spin_.count() > 0 && last_taken_ <= 1) spin_while_empty();
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [this] { return closed_ || !items_.empty(); });
    std::deque<CallPtr> taken;
    taken.swap(items_);
    size_.store(0, std::memory_order_release);
    last_taken_ = taken.size();
    return taken;
  }

  void close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    ready_.notify_all();
  }

 private:
  void spin_while_empty() const {
    const auto until = std::chrono::steady_clock::now() + spin_;
    while (size_.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::yield();  // gives the core to the gRPC thread about to push, if it shares it
    }
  }

  const std::chrono::microseconds spin_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<CallPtr> items_;
  std::atomic<std::size_t> size_{0};  // items_.size(), readable without the lock
  std::size_t last_taken_ = 0;        // only the one consumer thread uses it
  bool closed_ = false;
};

// Where new calls come from: the generic service and the queue its events arrive on.
struct Intake {
  grpc::AsyncGenericService* service;
  grpc::ServerCompletionQueue* completions;
  CallQueue* calls;
  Outbox* outbox;
  std::atomic<std::uint64_t>* next_id;
  std::atomic<bool>* accepting;
  const bool* stopping;  // the polling thread is draining: start nothing more
};

// One call on gRPC's side: wait for it, read its single request message, queue it for Python,
// then run the operations Python's answer needs. Every operation carries one of the call's
// tags; the polling thread hands each completed tag back here. Unary and server-streaming
// methods both fit this shape.
class RpcCall {
 public:
  enum class Event { kStarted, kRead, kWritten, kFinished, kDone };
  struct Tag {
    RpcCall* call;
    Event event;
  };

  // Ask gRPC for the next call; the object lives until that call is over.
  static void expect(const Intake& intake) {
    if (intake.accepting->load()) new RpcCall(intake);
  }

  void on(Event event, bool ok) {
    switch (event) {
      case Event::kStarted:
        return started(ok);
      case Event::kRead:
        read(ok);
        break;
      case Event::kWritten:
        written(ok);
        break;
      case Event::kFinished:
        break;
      case Event::kDone:
        done();
        break;
    }
    release();
  }

  // Operations started for Python (from the Outbox thread); each was counted when claimed.
  void write_and_finish() {
    stream_.WriteAndFinish(state_->write_buffer, grpc::WriteOptions(), grpc::Status::OK,
                           &finished_);
  }
  void write() { stream_.Write(state_->write_buffer, &written_); }
  void finish(const grpc::Status& status) { stream_.Finish(status, &finished_); }

  // The request's ASCII metadata (admin calls carry their credential there); binary ("-bin")
  // entries are left out, and gRPC hands keys over lower-case. Copied only when Python asks
  // (admin calls), not for every call; the caller holds the CallState's lock, so the call
  // cannot be deleted meanwhile, and gRPC no longer changes this map once the call started.
  std::vector<std::pair<std::string, std::string>> metadata() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [key, value] : context_.client_metadata()) {
      const std::string name(key.data(), key.size());
      if (name.size() >= 4 && name.compare(name.size() - 4, 4, "-bin") == 0) continue;
      out.emplace_back(name, std::string(value.data(), value.size()));
    }
    return out;
  }

 private:
  explicit RpcCall(const Intake& intake)
      : intake_(intake), stream_(&context_), state_(std::make_shared<CallState>()) {
    state_->outbox = intake.outbox;
    context_.AsyncNotifyWhenDone(&done_);
    intake.service->RequestCall(&context_, &stream_, intake.completions, intake.completions,
                                &started_);
  }

  void started(bool ok) {
    if (!ok) {  // the server is shutting down; the call never began, so no tag will follow
      delete this;
      return;
    }
    const bool stopping = *intake_.stopping;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->rpc = this;
      state_->operations = stopping ? 1 : 2;  // the end of the call (done_), and the read
    }
    if (stopping) return;
    expect(intake_);  // the next call
    state_->id = intake_.next_id->fetch_add(1) + 1;
    state_->method = context_.method();
    state_->deadline = context_.deadline();
    stream_.Read(&request_, &read_);
  }

  void read(bool ok) {
    if (*intake_.stopping) return;
    if (!ok) {  // the client sent no message (or went away first)
      finish_now(grpc::Status(grpc::StatusCode::INTERNAL, "the call carried no request message"));
      return;
    }
    state_->request = from_buffer(request_);
    request_.Clear();
    intake_.calls->push(state_);
  }

  // A streamed message is written: start the next one, or the finish that waited for it.
  void written(bool ok) {
    if (*intake_.stopping) return;
    bool write_next = false;
    bool finish = false;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->write_in_flight = false;
      if (!ok) state_->pending_writes.clear();
      if (!state_->pending_writes.empty()) {
        state_->write_buffer = to_buffer(state_->pending_writes.front());
        state_->pending_writes.pop_front();
        state_->write_in_flight = true;
        ++state_->operations;
        write_next = true;
      } else if (state_->finish_after_writes) {
        state_->finish_after_writes = false;
        ++state_->operations;
        finish = true;
      }
    }
    if (write_next) write();
    if (finish) this->finish(grpc::Status::OK);
  }

  // The call is over. If the client cancelled or the deadline passed, nothing more may be
  // started on it, and Python hears of it (if it holds the call) so a batch can drop the
  // caller before running.
  void done() {
    if (!context_.IsCancelled()) return;
    state_->cancelled.store(true);
    bool notify = false;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      notify = state_->dispatched;
      state_->finish_started = true;
      state_->pending_writes.clear();
      state_->finish_after_writes = false;
    }
    if (notify) intake_.calls->push(state_);
  }

  void finish_now(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (state_->finish_started) return;
      state_->finish_started = true;
      ++state_->operations;
    }
    finish(status);
  }

  // One tag is back; the last one deletes the call (Python's CallState stays, detached).
  void release() {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (--state_->operations > 0) return;
      state_->rpc = nullptr;
    }
    delete this;
  }

  Intake intake_;
  grpc::GenericServerContext context_;
  grpc::GenericServerAsyncReaderWriter stream_;
  grpc::ByteBuffer request_;
  CallPtr state_;
  Tag started_{this, Event::kStarted};
  Tag read_{this, Event::kRead};
  Tag written_{this, Event::kWritten};
  Tag finished_{this, Event::kFinished};
  Tag done_{this, Event::kDone};
};

// Claims the right to finish the call and counts the operation to come; the call to start
// it on, or null if the call is already answered or over.
RpcCall* claim_finish(CallState& call) {
  std::lock_guard<std::mutex> lock(call.mu);
  if (call.finish_started || call.rpc == nullptr) return nullptr;
  call.finish_started = true;
  ++call.operations;
  return call.rpc;
}

bool finish(CallState& call, std::string response) {
  RpcCall* rpc = claim_finish(call);
  if (rpc == nullptr) return false;
  call.write_buffer = to_buffer(response);
  call.outbox->post([rpc] { rpc->write_and_finish(); });
  return true;
}

bool abort_call(CallState& call, int code, const std::string& message) {
  if (code <= 0 || code > 16) throw std::invalid_argument("not a gRPC error code");
  RpcCall* rpc = claim_finish(call);
  if (rpc == nullptr) return false;
  grpc::Status status(static_cast<grpc::StatusCode>(code), message);
  call.outbox->post([rpc, status] { rpc->finish(status); });
  return true;
}

// Streams: messages are written one at a time, in order; the rest wait in `pending_writes`.
bool write(CallState& call, std::string message) {
  RpcCall* rpc = nullptr;
  {
    std::lock_guard<std::mutex> lock(call.mu);
    if (call.finish_started || call.rpc == nullptr) return false;
    if (call.write_in_flight) {
      call.pending_writes.push_back(std::move(message));
      return true;
    }
    call.write_in_flight = true;
    call.write_buffer = to_buffer(message);
    ++call.operations;
    rpc = call.rpc;
  }
  call.outbox->post([rpc] { rpc->write(); });
  return true;
}

bool close_stream(CallState& call) {
  RpcCall* rpc = nullptr;
  {
    std::lock_guard<std::mutex> lock(call.mu);
    if (call.finish_started || call.rpc == nullptr) return false;
    call.finish_started = true;
    if (call.write_in_flight) {
      call.finish_after_writes = true;
      return true;
    }
    ++call.operations;
    rpc = call.rpc;
  }
  call.outbox->post([rpc] { rpc->finish(grpc::Status::OK); });
  return true;
}

using ChannelArg = std::variant<int, std::string>;

// One gRPC server: the listening addresses, the generic service, the completion queue with its
// polling thread, and the queue of calls for Python.
class Frontend {
 public:
  Frontend(std::vector<std::string> addresses,
           std::vector<std::pair<std::string, ChannelArg>> channel_args, int spin_microseconds)
      : addresses_(std::move(addresses)),
        channel_args_(std::move(channel_args)),
        calls_(std::chrono::microseconds(spin_microseconds)) {}

  ~Frontend() {
    shutdown(0);
    calls_.close();
  }

  std::vector<int> start() {
    if (server_) throw std::runtime_error("the gRPC server is already started");
    grpc::ServerBuilder builder;
    std::vector<int> ports(addresses_.size(), 0);
    for (std::size_t i = 0; i < addresses_.size(); ++i) {
      builder.AddListeningPort(addresses_[i], grpc::InsecureServerCredentials(), &ports[i]);
    }
    for (const auto& [name, value] : channel_args_) {
      if (std::holds_alternative<int>(value)) {
        builder.AddChannelArgument(name, std::get<int>(value));
      } else {
        builder.AddChannelArgument(name, std::get<std::string>(value));
      }
    }
    builder.RegisterAsyncGenericService(&service_);
    completions_ = builder.AddCompletionQueue();
    server_ = builder.BuildAndStart();
    for (std::size_t i = 0; i < ports.size(); ++i) {
      if (!server_ || ports[i] == 0) {
        if (server_) server_->Shutdown(std::chrono::system_clock::now());
        server_.reset();
        completions_->Shutdown();
        void* tag;
        bool ok;
        while (completions_->Next(&tag, &ok)) {
        }
        completions_.reset();
        throw std::runtime_error("cannot listen on " + addresses_[i]);
      }
    }
    accepting_.store(true);
    const Intake intake{&service_, completions_.get(), &calls_, &outbox_, &next_id_, &accepting_,
                        &stopping_};
    for (int i = 0; i < kExpectedCalls; ++i) RpcCall::expect(intake);
    poller_ = std::thread([this] { poll(); });
    pthread_setname_np(poller_.native_handle(), "grpc-poller");  // as `top -H` shows it
    return ports;
  }

  // Stop taking calls, give in-flight ones `grace_seconds`, then cancel what is left. Once
  // gRPC is done with every call, the answers already handed over are started, and only then
  // is the completion queue shut down (no operation may start on it after that).
  void shutdown(double grace_seconds) {
    if (!server_ || stopped_) return;
    stopped_ = true;
    accepting_.store(false);
    auto deadline = std::chrono::system_clock::now() +
                    std::chrono::microseconds(static_cast<std::int64_t>(grace_seconds * 1e6));
    server_->Shutdown(deadline);
    server_->Wait();
    outbox_.stop();
    stop_alarm_.Set(completions_.get(), std::chrono::system_clock::now(), &stop_tag_);
    poller_.join();
  }

  std::deque<CallPtr> next_calls() {
    std::deque<CallPtr> calls = calls_.take_all();
    for (auto& call : calls) {
      std::lock_guard<std::mutex> lock(call->mu);
      call->dispatched = true;
    }
    return calls;
  }

  void close() { calls_.close(); }

 private:
  static constexpr int kExpectedCalls = 32;  // calls asked for ahead, so none waits for one

  // The one thread that polls the completion queue: gRPC does its network work here and hands
  // back each finished operation's tag. The stop tag comes from shutdown().
  void poll() {
    void* tag;
    bool ok;
    while (completions_->Next(&tag, &ok)) {
      auto* event = static_cast<RpcCall::Tag*>(tag);
      if (event->call == nullptr) {
        stopping_ = true;
        completions_->Shutdown();
        continue;
      }
      event->call->on(event->event, ok);
    }
  }

  std::vector<std::string> addresses_;
  std::vector<std::pair<std::string, ChannelArg>> channel_args_;
  CallQueue calls_;
  Outbox outbox_;
  grpc::AsyncGenericService service_;
  std::unique_ptr<grpc::ServerCompletionQueue> completions_;
  std::unique_ptr<grpc::Server> server_;  // destroyed before the queue and service it uses
  std::thread poller_;
  grpc::Alarm stop_alarm_;
  RpcCall::Tag stop_tag_{nullptr, RpcCall::Event::kDone};
  std::atomic<std::uint64_t> next_id_{0};
  std::atomic<bool> accepting_{false};
  bool stopping_ = false;  // set and read only on the polling thread
  bool stopped_ = false;
};

}  // namespace

PYBIND11_MODULE(_grpc_frontend, m) {
  m.doc() = "The data plane's gRPC transport (gRPC C++ completion queue, generic service).";

  py::class_<CallState, CallPtr>(m, "Call")
      .def_property_readonly("id", [](const CallState& c) { return c.id; })
      .def_property_readonly("method", [](const CallState& c) { return c.method; })
      .def_property_readonly("request", [](const CallState& c) { return py::bytes(c.request); })
      .def_property_readonly("cancelled", [](const CallState& c) { return c.cancelled.load(); })
      .def_property_readonly("metadata",
                             [](CallState& c) {
                               std::lock_guard<std::mutex> lock(c.mu);  // keeps `rpc` alive
                               return c.rpc != nullptr
                                          ? c.rpc->metadata()
                                          : std::vector<std::pair<std::string, std::string>>{};
                             })
      // No TLS on this transport yet, so no client certificate is ever verified.
      .def_property_readonly("client_verified", [](const CallState&) { return false; })
      .def_property_readonly("expired",
                             [](const CallState& c) {
                               return std::chrono::system_clock::now() >= c.deadline;
                             })
      .def("finish", [](CallState& c, const py::bytes& response) {
        return finish(c, std::string(response));
      })
      .def("abort", &abort_call, py::arg("code"), py::arg("message"))
      .def("write", [](CallState& c, const py::bytes& message) {
        return write(c, std::string(message));
      })
      .def("close_stream", &close_stream);

  py::class_<Frontend>(m, "Frontend")
      .def(py::init<std::vector<std::string>, std::vector<std::pair<std::string, ChannelArg>>,
                    int>(),
           py::arg("addresses"), py::arg("channel_args"), py::arg("spin_microseconds") = 0)
      .def("start", &Frontend::start)
      .def("shutdown", &Frontend::shutdown, py::arg("grace_seconds"),
           py::call_guard<py::gil_scoped_release>())
      .def("next_calls", [](Frontend& f) {
        std::deque<CallPtr> calls;
        {
          py::gil_scoped_release released;
          calls = f.next_calls();
        }
        py::list out;
        for (auto& call : calls) out.append(py::cast(call));
        return out;
      })
      .def("close", &Frontend::close, py::call_guard<py::gil_scoped_release>());
}
