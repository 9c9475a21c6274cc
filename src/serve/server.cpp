#include "serve/server.h"

#include <fcntl.h>
#include <httplib.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "fisdit/error.h"
#include "models/model.h"
#include "pipeline/output.h"

namespace fisdit::serve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kHttpThreads = 32;
constexpr int kMaxEventStreams = 16;  // each holds an HTTP thread while it lasts
constexpr auto kKeepAlive = std::chrono::seconds(10);
constexpr const char* kInterrupted =
    "interrupted: the server stopped while this job was running; submit it again";

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Where each stage's progress lies on the job's 0-100 bar.
int overall_progress(const std::string& stage, int done, int total) {
  const auto span = [&](int lo, int hi) {
    return lo + (total > 0 ? (hi - lo) * std::min(done, total) / total : 0);
  };
  if (stage == "text") return span(0, 5);
  if (stage == "image") return span(5, 10);
  if (stage == "denoise") return span(10, 85);
  if (stage == "decode") return span(85, 97);
  return 97;  // write
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(to_text(body), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& type, const std::string& param = "") {
  send_json(res, status, error_json(message, type, param));
}

bool same_secret(const std::string& a, const std::string& b) {
  // Constant time in the key's length: the comparison leaks no prefix.
  unsigned diff = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i % (b.size() + 1)]);
  return diff == 0;
}

std::string read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// "application/json", in any case, with or without parameters ("; charset=utf-8").
bool is_json_type(std::string type) {
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return type == "application/json";
}

// The host name of a Host header ("127.0.0.1:8080" -> "127.0.0.1", "[::1]:80" -> "::1").
std::string host_name(const std::string& header) {
  if (!header.empty() && header[0] == '[') return header.substr(1, header.find(']') - 1);
  return header.substr(0, header.find(':'));
}

}  // namespace

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// An exclusive lock on DATA/lock for the server's life: two servers on one data directory would
// both run its queue.
class DataLock {
 public:
  explicit DataLock(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    const std::string path = (fs::path(dir) / "lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw ParamError("data",
                       " " + dir + ": cannot create " + path + " (" + std::strerror(errno) + ")");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw ParamError("data", " " + dir + ": another fisdit serve is using this directory");
    }
  }
  ~DataLock() { ::close(fd_); }  // closing releases the lock
  DataLock(const DataLock&) = delete;
  DataLock& operator=(const DataLock&) = delete;

 private:
  int fd_ = -1;
};

struct Server::Impl {
  ServedModel model;
  ServeOptions opt;
  fs::path data;
  DataLock lock;
  JobStore store;
  std::unique_ptr<pipeline::Generator> generator;
  httplib::Server http;
  std::thread worker;

  std::mutex mutex;                   // guards what follows
  std::condition_variable work_cv;    // a job was queued, or stopping
  std::condition_variable change_cv;  // a job changed (event streams wait on it)
  uint64_t version = 0;               // bumped at every change
  std::string running;                // the job the worker runs
  bool cancel_running = false;
  std::map<std::string, std::pair<double, int64_t>> stage_seconds;  // sum, count
  double step_seconds_sum = 0;
  int64_t step_count = 0;
  std::map<int, int64_t> http_codes;

  std::mutex submit_mutex;  // the queue bound and the insert as one step
  std::atomic<bool> stopping{false};
  std::atomic<int> event_streams{0};
  double started_at = unix_now();

  Impl(ServedModel m, ServeOptions o)
      : model(std::move(m)),
        opt(std::move(o)),
        data(opt.data),
        lock(opt.data),
        store(open_store(opt.data)) {}

  static std::string open_store(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(fs::path(dir) / "videos", ec);
    fs::create_directories(fs::path(dir) / "inputs", ec);
    if (!fs::is_directory(fs::path(dir) / "videos"))
      throw ParamError("data", " " + dir + ": cannot create the directory (" + ec.message() + ")");
    return (fs::path(dir) / "jobs.sqlite").string();
  }

  void changed() {
    {
      std::lock_guard lock(mutex);
      ++version;
    }
    change_cv.notify_all();
  }

  std::optional<int64_t> position(const Job& j) {
    if (j.status != JobStatus::Queued) return std::nullopt;
    return store.queue_position(j.seq);
  }

  json job_object(const Job& j) { return job_json(j, position(j)); }

  // ---- the worker
  void work();
  void run_job(const Job& job);
  void record_metrics(const json& summary);

  // ---- HTTP
  void routes();
  void submit(const httplib::Request& req, httplib::Response& res);
  void list(const httplib::Request& req, httplib::Response& res);
  void events(const std::string& id, httplib::Response& res);
  void remove(const std::string& id, httplib::Response& res);
  std::string metrics();
  // The job of a path's id, or nullopt after answering 400 / 404.
  std::optional<Job> job_of(const std::string& id, httplib::Response& res);
};

// ---------------------------------------------------------------------------- the worker

void Server::Impl::work() {
  while (!stopping) {
    std::optional<Job> job = store.next_queued();
    if (!job) {
      std::unique_lock lock(mutex);
      work_cv.wait_for(lock, std::chrono::seconds(1));
      continue;
    }
    if (!store.claim(job->id, unix_now())) continue;  // cancelled meanwhile
    changed();
    run_job(*job);
    changed();
  }
}

void Server::Impl::run_job(const Job& job) {
  {
    std::lock_guard lock(mutex);
    running = job.id;
    cancel_running = false;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  std::fprintf(stderr, "job %s: started (%s, %d frames, %d steps, fis %s)\n", job.id.c_str(),
               job.request.value("size", "").c_str(), job.request.value("frames", 0),
               job.request.value("steps", 0), job.request.value("fis", "").c_str());
  const fs::path final_path = data / "videos" / (job.id + ".mp4");
  const fs::path tmp_path = data / "videos" / (job.id + ".mp4.tmp");
  json seconds = json::object();
  std::string stage;
  double stage_started = 0;
  const auto check_stop = [&] {
    std::lock_guard lock(mutex);
    if (cancel_running) throw pipeline::Cancelled("cancelled by a DELETE request");
    if (stopping) throw pipeline::Cancelled(kInterrupted);
  };
  try {
    pipeline::GenerateOptions o = to_options(
        job.request, job.image_path.empty() ? "" : (data / job.image_path).string(), model);
    const int steps = o.steps;
    // Between units of work: stop if asked, else record the stage, step and progress.
    o.on_progress = [&](const std::string& s, int done, int total) {
      check_stop();
      if (s != stage) {
        if (!stage.empty()) seconds[stage] = elapsed() - stage_started;
        stage = s;
        stage_started = elapsed();
      }
      store.set_progress(job.id, overall_progress(s, done, total), s,
                         s == "denoise" ? done : (s == "decode" ? steps : 0), steps, seconds);
      changed();
    };
    pipeline::GenerateResult r = generator->run(o);
    check_stop();
    json so_far = r.summary["seconds"];
    store.set_progress(job.id, overall_progress("write", 0, 1), "write", steps, steps, so_far);
    changed();
    pipeline::OutputOptions out;
    out.output = tmp_path.string();
    pipeline::write_outputs(r, out);
    // The MP4 appears under its name only whole: a killed process leaves at most a .tmp.
    fs::rename(tmp_path, final_path);
    seconds = r.summary["seconds"];
    seconds["total"] = elapsed();
    if (store.finish(job.id, JobStatus::Completed, "", "videos/" + job.id + ".mp4", seconds,
                     unix_now())) {
      record_metrics(r.summary);
      std::fprintf(stderr, "job %s: completed in %.2f s\n", job.id.c_str(), elapsed());
    } else {  // cancelled while it was being written
      std::error_code ec;
      fs::remove(final_path, ec);
    }
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(tmp_path, ec);
    if (!stage.empty()) seconds[stage] = elapsed() - stage_started;
    seconds["total"] = elapsed();
    const bool cancelled = dynamic_cast<const pipeline::Cancelled*>(&e) != nullptr;
    const bool interrupted = cancelled && std::string(e.what()) == kInterrupted;
    store.finish(job.id, cancelled && !interrupted ? JobStatus::Cancelled : JobStatus::Failed,
                 e.what(), "", seconds, unix_now());
    std::fprintf(stderr, "job %s: %s: %s\n", job.id.c_str(),
                 cancelled && !interrupted ? "cancelled" : "failed", e.what());
  }
  std::lock_guard lock(mutex);
  running.clear();
  cancel_running = false;
}

void Server::Impl::record_metrics(const json& summary) {
  std::lock_guard lock(mutex);
  if (const auto it = summary.find("seconds"); it != summary.end())
    for (const auto& [stage, s] : it->items())
      if (s.is_number()) {
        auto& [sum, count] = stage_seconds[stage];
        sum += s.get<double>();
        ++count;
      }
  if (const auto it = summary.find("steps"); it != summary.end())
    for (const json& step : *it) {
      step_seconds_sum += step.value("seconds", 0.0);
      ++step_count;
    }
}

// ---------------------------------------------------------------------------- HTTP

std::optional<Job> Server::Impl::job_of(const std::string& id, httplib::Response& res) {
  if (!valid_job_id(id)) {
    send_error(res, 400, "id: not a job id (vid_ and 24 hex digits)", "invalid_request_error",
               "id");
    return std::nullopt;
  }
  std::optional<Job> j = store.get(id);
  if (!j) send_error(res, 404, "no job " + id, "not_found", "id");
  return j;
}

void Server::Impl::submit(const httplib::Request& req, httplib::Response& res) {
  if (!is_json_type(req.get_header_value("Content-Type")))
    return send_error(res, 415, "the body must be JSON (Content-Type: application/json)",
                      "unsupported_media_type");
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::exception& e) {
    return send_error(res, 400, std::string("the body is not valid JSON: ") + e.what(),
                      "invalid_request_error");
  }
  std::lock_guard submit_lock(submit_mutex);
  if (store.active() >= model.queue_max)
    return send_error(res, 429,
                      "the queue is full (" + std::to_string(model.queue_max) +
                          " jobs queued or running): try again later",
                      "queue_full");
  Job job;
  job.id = new_job_id();
  fs::path image_file;
  try {
    std::string image, ext;
    job.request = resolve_request(body, model, &image, &ext);
    if (!image.empty()) {
      job.image_path = "inputs/" + job.id + ext;
      image_file = data / job.image_path;
      std::ofstream f(image_file, std::ios::binary);
      f.write(image.data(), static_cast<std::streamsize>(image.size()));
      if (!f.flush()) throw Error("cannot write the image to " + image_file.string());
    }
    const pipeline::GenerateOptions o =
        to_options(job.request, image_file.empty() ? "" : image_file.string(), model);
    const pipeline::CheckedRequest checked = generator->check(o);
    // I2V takes its size from the image: record the size the video will have.
    job.request["size"] = size_text(checked.options.width, checked.options.height);
    job.steps = o.steps;
  } catch (const ParamError& e) {
    std::error_code ec;
    if (!image_file.empty()) fs::remove(image_file, ec);
    // From the parts, not what(): a field name may hold a NUL, which would end a C string.
    return send_error(res, 400, e.param() + e.rest(), "invalid_request_error",
                      api_param(e.param()));
  } catch (const Error& e) {
    std::error_code ec;
    if (!image_file.empty()) fs::remove(image_file, ec);
    return send_error(res, 400, e.what(), "invalid_request_error");
  }
  job.created_at = unix_now();
  store.insert(job);
  std::fprintf(stderr, "job %s: queued\n", job.id.c_str());
  work_cv.notify_one();
  changed();
  res.set_header("Location", "/v1/videos/" + job.id);
  send_json(res, 202, job_object(job));
}

void Server::Impl::list(const httplib::Request& req, httplib::Response& res) {
  int limit = 20;
  if (req.has_param("limit")) {
    const std::string v = req.get_param_value("limit");
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || n < 1 || n > 100)
      return send_error(res, 400, "limit: must be an integer in 1..100", "invalid_request_error",
                        "limit");
    limit = static_cast<int>(n);
  }
  std::optional<std::string> after;
  if (req.has_param("after")) {
    after = req.get_param_value("after");
    if (!valid_job_id(*after) || !store.get(*after))
      return send_error(res, 400, "after: no job " + after->substr(0, 64), "invalid_request_error",
                        "after");
  }
  bool has_more = false;
  json data = json::array();
  for (const Job& j : store.list(limit, after, &has_more)) data.push_back(job_object(j));
  send_json(res, 200, {{"object", "list"}, {"data", data}, {"has_more", has_more}});
}

void Server::Impl::events(const std::string& id, httplib::Response& res) {
  if (event_streams.fetch_add(1) >= kMaxEventStreams) {
    event_streams.fetch_sub(1);
    return send_error(res, 429, "too many event streams open; poll GET /v1/videos/" + id,
                      "queue_full");
  }
  struct Stream {
    std::string last;
    bool ended = false;
    std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  };
  auto st = std::make_shared<Stream>();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, id, st](size_t, httplib::DataSink& sink) {
        const auto send = [&](const std::string& text) {
          st->last_write = std::chrono::steady_clock::now();
          return sink.write(text.data(), text.size());
        };
        if (st->ended) {
          sink.done();
          return true;
        }
        uint64_t seen;
        {
          std::lock_guard lock(mutex);
          seen = version;
        }
        const std::optional<Job> j = store.get(id);
        if (!j) {  // deleted meanwhile
          st->ended = true;
          sink.done();
          return true;
        }
        const std::string data = to_text(job_object(*j));
        if (data != st->last) {
          if (!send("event: progress\ndata: " + data + "\n\n")) return false;  // client gone
          st->last = data;
        }
        if (is_final(j->status)) {
          st->ended = true;
          if (!send("event: done\ndata: " + data + "\n\n")) return false;
          sink.done();
          return true;
        }
        // Until some job changes, or 10 s after this stream last wrote (other jobs' changes
        // wake it too, and must not hold the keep-alive back).
        std::unique_lock lock(mutex);
        change_cv.wait_until(lock, st->last_write + kKeepAlive,
                             [&] { return version != seen || stopping.load(); });
        lock.unlock();
        if (stopping) {
          st->ended = true;
          sink.done();
          return true;
        }
        if (std::chrono::steady_clock::now() >= st->last_write + kKeepAlive &&
            !send(": keep-alive\n\n"))
          return false;
        return true;
      },
      [this](bool) { event_streams.fetch_sub(1); });
}

void Server::Impl::remove(const std::string& id, httplib::Response& res) {
  const std::optional<Job> j = job_of(id, res);
  if (!j) return;
  if (!is_final(j->status)) {
    if (store.cancel(id, "cancelled by a DELETE request", unix_now())) {
      std::lock_guard lock(mutex);
      if (running == id) cancel_running = true;  // the worker stops at the next step
    }
    changed();
    const std::optional<Job> now = store.get(id);
    if (now && !is_final(now->status))
      return send_error(res, 500, "could not cancel", "server_error");
    if (now && now->status == JobStatus::Cancelled)
      std::fprintf(stderr, "job %s: cancelled\n", id.c_str());
    return send_json(res, 200, job_object(*now));
  }
  std::error_code ec;
  if (!j->output.empty()) fs::remove(data / j->output, ec);
  if (!j->image_path.empty()) fs::remove(data / j->image_path, ec);
  store.remove(id);
  changed();
  send_json(res, 200, {{"id", id}, {"object", "video.deleted"}, {"deleted", true}});
}

std::string Server::Impl::metrics() {
  std::string m;
  const auto line = [&](const std::string& s) { m += s + "\n"; };
  const std::map<std::string, int64_t> counts = store.counts();
  line("# HELP fisdit_queue_length Jobs waiting to run.");
  line("# TYPE fisdit_queue_length gauge");
  line("fisdit_queue_length " + std::to_string(counts.at("queued")));
  line("# HELP fisdit_jobs Jobs in the database by status.");
  line("# TYPE fisdit_jobs gauge");
  for (const auto& [status, n] : counts)
    line("fisdit_jobs{status=\"" + status + "\"} " + std::to_string(n));
  std::lock_guard lock(mutex);
  char buf[64];
  const auto num = [&](double v) {
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf);
  };
  line("# HELP fisdit_step_seconds Denoising step time of completed jobs.");
  line("# TYPE fisdit_step_seconds summary");
  line("fisdit_step_seconds_sum " + num(step_seconds_sum));
  line("fisdit_step_seconds_count " + std::to_string(step_count));
  line("# HELP fisdit_stage_seconds Stage times of completed jobs.");
  line("# TYPE fisdit_stage_seconds summary");
  for (const auto& [stage, sc] : stage_seconds) {
    line("fisdit_stage_seconds_sum{stage=\"" + stage + "\"} " + num(sc.first));
    line("fisdit_stage_seconds_count{stage=\"" + stage + "\"} " + std::to_string(sc.second));
  }
  line("# HELP fisdit_http_requests_total HTTP responses by status code.");
  line("# TYPE fisdit_http_requests_total counter");
  for (const auto& [code, n] : http_codes)
    line("fisdit_http_requests_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(n));
  line("# HELP fisdit_uptime_seconds Seconds since the server started.");
  line("# TYPE fisdit_uptime_seconds gauge");
  line("fisdit_uptime_seconds " + num(unix_now() - started_at));
  return m;
}

void Server::Impl::routes() {
  using httplib::Request;
  using httplib::Response;
  using HR = httplib::Server::HandlerResponse;
  http.new_task_queue = [] { return new httplib::ThreadPool(kHttpThreads); };
  http.set_payload_max_length(opt.max_body_bytes);
  http.set_read_timeout(10, 0);
  http.set_write_timeout(10, 0);

  http.set_pre_routing_handler([this](const Request& req, Response& res) -> HR {
    if (!opt.cors.empty()) res.set_header("Access-Control-Allow-Origin", opt.cors);
    // The library would cut any answer, errors included, to a Range header: ranges are not
    // served (a video is fetched whole).
    if (!req.ranges.empty()) const_cast<Request&>(req).ranges.clear();  // the library's own
    // Without a key only loopback names may address the server: a web page elsewhere cannot
    // reach it through a DNS name rebound to 127.0.0.1.
    if (opt.api_key.empty() && req.has_header("Host") &&
        !is_loopback(host_name(req.get_header_value("Host")))) {
      send_error(res, 403,
                 "Host " + req.get_header_value("Host").substr(0, 100) +
                     ": a server without --api-key answers loopback names only",
                 "forbidden");
      return HR::Handled;
    }
    if (opt.api_key.empty() || req.path == "/health" || req.path == "/") return HR::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) == 0 && same_secret(auth.substr(7), opt.api_key))
      return HR::Unhandled;
    send_error(res, 401, "missing or wrong API key (Authorization: Bearer KEY)", "unauthorized");
    return HR::Handled;
  });
  // Every error answer is JSON: the library's own (404 no route, 413, 400 unparsable request)
  // get a body here; the handlers' keep theirs.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const Request& req,
                                                                 Response& res) -> HR {
    if (!res.body.empty()) return HR::Unhandled;
    if (res.status == 404)
      send_error(res, 404, "no route " + req.method + " " + req.path.substr(0, 200), "not_found");
    else if (res.status == 413)
      send_error(res, 413, "the request body is larger than the server accepts",
                 "request_too_large");
    else
      send_error(res, res.status, "bad request", "invalid_request_error");
    return HR::Handled;
  }));
  http.set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, 500, what, "server_error");
  });
  http.set_logger([this](const Request&, const Response& res) {
    std::lock_guard lock(mutex);
    ++http_codes[res.status];
  });

  http.Get("/", [](const Request&, Response& res) {
    // Only this page's own inline code and the server's own routes.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'; media-src blob:; img-src data: blob:");
    res.set_content(kPageHtml, "text/html; charset=utf-8");
  });
  http.Get("/health", [this](const Request&, Response& res) {
    send_json(res, 200,
              {{"status", "ok"},
               {"model", model.name},
               {"device", model.base.device},
               {"queue", store.counts().at("queued")}});
  });
  http.Get("/metrics", [this](const Request&, Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });
  http.Get("/v1/model", [this](const Request&, Response& res) {
    send_json(res, 200, model_json(model, model.base.device));
  });
  http.Post("/v1/videos", [this](const Request& req, Response& res) { submit(req, res); });
  http.Get("/v1/videos", [this](const Request& req, Response& res) { list(req, res); });
  http.Get(R"(/v1/videos/([^/]+))", [this](const Request& req, Response& res) {
    if (const std::optional<Job> j = job_of(req.matches[1], res))
      send_json(res, 200, job_object(*j));
  });
  http.Delete(R"(/v1/videos/([^/]+))",
              [this](const Request& req, Response& res) { remove(req.matches[1], res); });
  http.Get(R"(/v1/videos/([^/]+)/content)", [this](const Request& req, Response& res) {
    const std::optional<Job> j = job_of(req.matches[1], res);
    if (!j) return;
    if (j->status != JobStatus::Completed)
      return send_error(res, 409,
                        "job " + j->id + " is " + status_name(j->status) +
                            ": its video exists once it has completed",
                        "conflict");
    std::string mp4 = read_file(data / j->output);
    if (mp4.empty())
      return send_error(res, 404,
                        "the video of job " + j->id + " is missing from the data directory",
                        "not_found");
    res.set_header("Content-Disposition", "inline; filename=\"" + j->id + ".mp4\"");
    res.set_content(std::move(mp4), "video/mp4");
  });
  http.Get(R"(/v1/videos/([^/]+)/events)", [this](const Request& req, Response& res) {
    if (const std::optional<Job> j = job_of(req.matches[1], res)) events(j->id, res);
  });

  // Known routes with another method: 405 (the library would say 404).
  const auto not_allowed = [](const char* allowed) {
    return [allowed](const Request& req, Response& res) {
      res.set_header("Allow", allowed);
      send_error(res, 405, req.method + " " + req.path.substr(0, 200) + ": allowed " + allowed,
                 "method_not_allowed");
    };
  };
  for (const auto& [path, allowed] :
       std::vector<std::pair<std::string, const char*>>{{"/", "GET"},
                                                        {"/health", "GET"},
                                                        {"/metrics", "GET"},
                                                        {"/v1/model", "GET"},
                                                        {"/v1/videos", "GET, POST"},
                                                        {R"(/v1/videos/([^/]+))", "GET, DELETE"},
                                                        {R"(/v1/videos/([^/]+)/content)", "GET"},
                                                        {R"(/v1/videos/([^/]+)/events)", "GET"}}) {
    const std::string a = allowed;
    if (a.find("GET") == std::string::npos) http.Get(path, not_allowed(allowed));
    if (a.find("POST") == std::string::npos) http.Post(path, not_allowed(allowed));
    if (a.find("DELETE") == std::string::npos) http.Delete(path, not_allowed(allowed));
    http.Put(path, not_allowed(allowed));
    http.Patch(path, not_allowed(allowed));
  }
}

// ---------------------------------------------------------------------------- Server

Server::Server(ServedModel model, ServeOptions options) {
  if (!is_loopback(options.host) && options.api_key.empty())
    throw ParamError("api_key",
                     ": binding " + options.host + " (not a loopback address) needs an API key");
  if (options.port < 0 || options.port > 65535)
    throw ParamError("port", " " + std::to_string(options.port) + ": must be in 0..65535");
  if (model.queue_max < 1) throw ParamError("queue_max", ": must be at least 1");
  if (model.max_frames < 1) throw ParamError("max_frames", ": must be at least 1");
  if (model.max_pixels < 1) throw ParamError("max_pixels", ": must be at least 1");
  impl_ = std::make_unique<Impl>(std::move(model), std::move(options));
  Impl& s = *impl_;
  const std::vector<std::string> lost = s.store.recover(
      "interrupted: the server stopped while this job was running (the process ended); submit "
      "it again",
      unix_now());
  for (const std::string& id : lost)
    std::fprintf(stderr, "job %s: was running when the server stopped: marked failed\n",
                 id.c_str());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(s.data / "videos", ec))
    if (e.path().extension() == ".tmp") fs::remove(e.path(), ec);  // a write cut short

  s.generator = std::make_unique<pipeline::Generator>(s.model.base, /*keep_loaded=*/true);
  const models::ReleaseInfo& info = s.generator->release();
  s.model.task = models::task_name(info.model.task);
  s.model.takes_image = info.takes_image();
  s.model.needs_image = info.needs_image();
  s.model.fps = info.fps;
  s.model.precision = s.model.base.precision != "bf16" ? s.model.base.precision
                      : s.model.base.device == "cpu"   ? "fp32"
                                                       : "bf16";
}

Server::~Server() {
  stop();
  if (impl_ && impl_->worker.joinable()) impl_->worker.join();
}

const ServedModel& Server::model() const { return impl_->model; }

void Server::run(const std::function<void(int port, double load_seconds)>& on_listening) {
  Impl& s = *impl_;
  const double load_seconds = s.generator->preload();
  s.routes();
  int port = s.opt.port;
  if (port == 0)
    port = s.http.bind_to_any_port(s.opt.host);
  else if (!s.http.bind_to_port(s.opt.host, port))
    port = -1;
  if (port <= 0)
    throw ParamError("port", " " + std::to_string(s.opt.port) + ": cannot listen on " + s.opt.host +
                                 " (in use, or not an address of this machine)");
  s.worker = std::thread([&s] { s.work(); });
  on_listening(port, load_seconds);
  if (!s.stopping) s.http.listen_after_bind();
  stop();
  s.worker.join();
}

void Server::stop() {
  if (!impl_) return;
  Impl& s = *impl_;
  s.stopping = true;
  s.work_cv.notify_all();
  s.change_cv.notify_all();
  s.http.stop();
}

}  // namespace fisdit::serve
