#pragma once
// The jobs of `fisdit serve` in SQLite (WAL): one row per job with its request, status,
// progress, per-stage seconds, error and output. Every method is one short transaction under one
// mutex, so HTTP threads and the worker share a store; state changes that race (a cancel against
// the worker claiming the job) are single conditional UPDATEs.
#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace fisdit::serve {

enum class JobStatus : uint8_t { Queued, InProgress, Completed, Failed, Cancelled };
const char* status_name(JobStatus s);  // "queued", "in_progress", ...
bool is_final(JobStatus s);            // completed, failed or cancelled

struct Job {
  int64_t seq = 0;  // arrival order (assigned by insert)
  std::string id;   // "vid_" + 24 hex digits
  JobStatus status = JobStatus::Queued;
  double created_at = 0;  // Unix seconds
  std::optional<double> started_at, completed_at;
  nlohmann::json request = nlohmann::json::object();  // resolved settings, as the API shows them
  std::string image_path;                             // the uploaded first frame, or ""
  int progress = 0;                                   // 0-100
  std::string stage;                                  // while running
  int step = 0, steps = 0;
  nlohmann::json seconds = nlohmann::json::object();  // per stage
  std::string error;                                  // failed / cancelled
  std::string output;                                 // the MP4, relative to the data directory
};

class JobStore {
 public:
  // Opens (creating if needed) the database at `path`. Throws fisdit::Error naming the file.
  explicit JobStore(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // At start: jobs left in_progress by a process that stopped are marked failed with `reason`;
  // returns their ids. Queued jobs stay queued (the worker runs them).
  std::vector<std::string> recover(const std::string& reason, double now);

  void insert(Job& job);  // sets job.seq
  std::optional<Job> get(const std::string& id);
  std::optional<Job> next_queued();  // the oldest queued job
  // queued -> in_progress; false when the job is no longer queued (cancelled meanwhile).
  bool claim(const std::string& id, double now);
  // queued or in_progress -> cancelled with `reason`; false when the job had already ended.
  bool cancel(const std::string& id, const std::string& reason, double now);
  // The running job's progress (only while in_progress).
  void set_progress(const std::string& id, int progress, const std::string& stage, int step,
                    int steps, const nlohmann::json& seconds);
  // in_progress -> completed / failed / cancelled; false when it was not in_progress.
  bool finish(const std::string& id, JobStatus status, const std::string& error,
              const std::string& output, const nlohmann::json& seconds, double now);
  void remove(const std::string& id);

  // Newest first, `limit` jobs older than `after` (an id; none: from the newest).
  std::vector<Job> list(int limit, const std::optional<std::string>& after, bool* has_more);
  int64_t queue_position(int64_t seq);      // queued jobs that arrived before seq
  int64_t active();                         // queued + in_progress
  std::map<std::string, int64_t> counts();  // by status name (every status present)

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
  std::mutex mutex_;
  void exec(const char* sql);
};

}  // namespace fisdit::serve
