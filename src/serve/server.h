#pragma once
// fisdit serve: one release resident behind the HTTP API and web page of docs/SERVE.md. HTTP
// threads only read and write the job table (serve/job_store.h); one worker runs the jobs on the
// device in arrival order.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "serve/api.h"

namespace fisdit::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  std::string data = "fisdit-serve";
  std::string api_key;  // required unless host is a loopback address
  size_t max_body_bytes = size_t{16} << 20;
  std::string cors;  // Access-Control-Allow-Origin, or none
};

bool is_loopback(const std::string& host);

class Server {
 public:
  // Opens the data directory and its job database (jobs left running by a stopped process are
  // marked failed) and the release of model.base (no weight read yet), and fills in what the
  // release says (task, image, fps, precision). Throws ParamError (host, api_key, data, ...)
  // for bad options, fisdit::Error for the rest.
  Server(ServedModel model, ServeOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  const ServedModel& model() const;
  // Loads the text encoder and DiT expert(s), binds, calls on_listening(port), then serves until
  // stop(). A job running at stop() ends failed ("interrupted: ..."); queued jobs stay queued.
  void run(const std::function<void(int port, double load_seconds)>& on_listening);
  void stop();  // from any thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The page served at "/" (serve/page.html, compiled in).
extern const char* const kPageHtml;

}  // namespace fisdit::serve
