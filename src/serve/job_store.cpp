#include "serve/job_store.h"

#include <sqlite3.h>

#include <utility>

#include "fisdit/error.h"
#include "serve/api.h"

namespace fisdit::serve {
namespace {

constexpr const char* kStatusNames[] = {"queued", "in_progress", "completed", "failed",
                                        "cancelled"};

JobStatus parse_status(const std::string& s) {
  for (int i = 0; i < 5; ++i)
    if (s == kStatusNames[i]) return static_cast<JobStatus>(i);
  throw Error("jobs database: unknown status '" + s + "'");
}

// One prepared statement: bind by position (from 1), step, read columns (from 0).
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK)
      throw Error(std::string("jobs database: ") + sqlite3_errmsg(db) + " in: " + sql);
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind(int i, double v) {
    check(sqlite3_bind_double(st_, i, v));
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    check(sqlite3_bind_int64(st_, i, v));
    return *this;
  }
  Stmt& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Stmt& bind(int i, const std::optional<double>& v) {
    check(v ? sqlite3_bind_double(st_, i, *v) : sqlite3_bind_null(st_, i));
    return *this;
  }
  // true while a row is available.
  bool step() {
    const int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw Error(std::string("jobs database: ") + sqlite3_errmsg(db_));
  }
  int changes() const { return sqlite3_changes(db_); }
  std::string text(int c) const {
    const auto* p = sqlite3_column_text(st_, c);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(st_, c)))
             : std::string();
  }
  int64_t integer(int c) const { return sqlite3_column_int64(st_, c); }
  double real(int c) const { return sqlite3_column_double(st_, c); }
  std::optional<double> optional_real(int c) const {
    if (sqlite3_column_type(st_, c) == SQLITE_NULL) return std::nullopt;
    return real(c);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
  void check(int rc) const {
    if (rc != SQLITE_OK) throw Error(std::string("jobs database: ") + sqlite3_errmsg(db_));
  }
};

constexpr const char* kColumns =
    "seq, id, status, created_at, started_at, completed_at, request, image_path, progress, "
    "stage, step, steps, seconds, error, output";

Job read_job(const Stmt& s) {
  Job j;
  j.seq = s.integer(0);
  j.id = s.text(1);
  j.status = parse_status(s.text(2));
  j.created_at = s.real(3);
  j.started_at = s.optional_real(4);
  j.completed_at = s.optional_real(5);
  j.request = nlohmann::json::parse(s.text(6));
  j.image_path = s.text(7);
  j.progress = static_cast<int>(s.integer(8));
  j.stage = s.text(9);
  j.step = static_cast<int>(s.integer(10));
  j.steps = static_cast<int>(s.integer(11));
  j.seconds = nlohmann::json::parse(s.text(12));
  j.error = s.text(13);
  j.output = s.text(14);
  return j;
}

std::string select(const std::string& rest) {
  return std::string("SELECT ") + kColumns + " FROM jobs " + rest;
}

}  // namespace

const char* status_name(JobStatus s) { return kStatusNames[static_cast<int>(s)]; }

bool is_final(JobStatus s) {
  return s == JobStatus::Completed || s == JobStatus::Failed || s == JobStatus::Cancelled;
}

JobStore::JobStore(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw Error("jobs database " + path + ": cannot open: " + why);
  }
  try {
    sqlite3_busy_timeout(db_, 5000);
    // WAL: readers never wait for the writer; NORMAL sync keeps every committed job across a
    // killed process (only a power loss may lose the last transactions).
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec(
        "CREATE TABLE IF NOT EXISTS jobs ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " id TEXT NOT NULL UNIQUE,"
        " status TEXT NOT NULL CHECK (status IN"
        "  ('queued', 'in_progress', 'completed', 'failed', 'cancelled')),"
        " created_at REAL NOT NULL, started_at REAL, completed_at REAL,"
        " request TEXT NOT NULL, image_path TEXT NOT NULL DEFAULT '',"
        " progress INTEGER NOT NULL DEFAULT 0, stage TEXT NOT NULL DEFAULT '',"
        " step INTEGER NOT NULL DEFAULT 0, steps INTEGER NOT NULL DEFAULT 0,"
        " seconds TEXT NOT NULL DEFAULT '{}', error TEXT NOT NULL DEFAULT '',"
        " output TEXT NOT NULL DEFAULT '')");
    exec("CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq)");
  } catch (const Error& e) {
    sqlite3_close(db_);
    throw Error(path + ": " + e.what());
  }
}

JobStore::~JobStore() { sqlite3_close(db_); }

void JobStore::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string why = err ? err : "unknown error";
    sqlite3_free(err);
    throw Error("jobs database: " + why);
  }
}

std::vector<std::string> JobStore::recover(const std::string& reason, double now) {
  std::lock_guard lock(mutex_);
  std::vector<std::string> ids;
  Stmt s(db_, "SELECT id FROM jobs WHERE status = 'in_progress' ORDER BY seq");
  while (s.step()) ids.push_back(s.text(0));
  Stmt u(db_,
         "UPDATE jobs SET status = 'failed', error = ?1, completed_at = ?2, stage = '' "
         "WHERE status = 'in_progress'");
  u.bind(1, reason).bind(2, now).step();
  return ids;
}

void JobStore::insert(Job& job) {
  std::lock_guard lock(mutex_);
  Stmt s(db_,
         "INSERT INTO jobs (id, status, created_at, request, image_path, steps) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  s.bind(1, job.id)
      .bind(2, std::string(status_name(job.status)))
      .bind(3, job.created_at)
      .bind(4, to_text(job.request))
      .bind(5, job.image_path)
      .bind(6, job.steps)
      .step();
  job.seq = sqlite3_last_insert_rowid(db_);
}

std::optional<Job> JobStore::get(const std::string& id) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, select("WHERE id = ?1").c_str());
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_job(s);
}

std::optional<Job> JobStore::next_queued() {
  std::lock_guard lock(mutex_);
  Stmt s(db_, select("WHERE status = 'queued' ORDER BY seq LIMIT 1").c_str());
  if (!s.step()) return std::nullopt;
  return read_job(s);
}

bool JobStore::claim(const std::string& id, double now) {
  std::lock_guard lock(mutex_);
  Stmt s(db_,
         "UPDATE jobs SET status = 'in_progress', started_at = ?2 "
         "WHERE id = ?1 AND status = 'queued'");
  s.bind(1, id).bind(2, now).step();
  return s.changes() == 1;
}

bool JobStore::cancel(const std::string& id, const std::string& reason, double now) {
  std::lock_guard lock(mutex_);
  Stmt s(db_,
         "UPDATE jobs SET status = 'cancelled', error = ?2, completed_at = ?3, stage = '' "
         "WHERE id = ?1 AND status IN ('queued', 'in_progress')");
  s.bind(1, id).bind(2, reason).bind(3, now).step();
  return s.changes() == 1;
}

void JobStore::set_progress(const std::string& id, int progress, const std::string& stage, int step,
                            int steps, const nlohmann::json& seconds) {
  std::lock_guard lock(mutex_);
  Stmt s(db_,
         "UPDATE jobs SET progress = ?2, stage = ?3, step = ?4, steps = ?5, seconds = ?6 "
         "WHERE id = ?1 AND status = 'in_progress'");
  s.bind(1, id).bind(2, progress).bind(3, stage).bind(4, step).bind(5, steps);
  s.bind(6, to_text(seconds)).step();
}

bool JobStore::finish(const std::string& id, JobStatus status, const std::string& error,
                      const std::string& output, const nlohmann::json& seconds, double now) {
  std::lock_guard lock(mutex_);
  Stmt s(db_,
         "UPDATE jobs SET status = ?2, error = ?3, output = ?4, seconds = ?5, completed_at = ?6,"
         " stage = '', progress = CASE WHEN ?2 = 'completed' THEN 100 ELSE progress END "
         "WHERE id = ?1 AND status = 'in_progress'");
  s.bind(1, id).bind(2, std::string(status_name(status))).bind(3, error).bind(4, output);
  s.bind(5, to_text(seconds)).bind(6, now).step();
  return s.changes() == 1;
}

void JobStore::remove(const std::string& id) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "DELETE FROM jobs WHERE id = ?1");
  s.bind(1, id).step();
}

std::vector<Job> JobStore::list(int limit, const std::optional<std::string>& after,
                                bool* has_more) {
  std::lock_guard lock(mutex_);
  // One row more than asked says whether another page follows.
  Stmt s(db_, select("WHERE seq < COALESCE((SELECT seq FROM jobs WHERE id = ?1), "
                     "9223372036854775807) ORDER BY seq DESC LIMIT ?2")
                  .c_str());
  s.bind(1, after.value_or("")).bind(2, limit + 1);
  std::vector<Job> jobs;
  while (s.step()) jobs.push_back(read_job(s));
  if (has_more) *has_more = static_cast<int>(jobs.size()) > limit;
  if (static_cast<int>(jobs.size()) > limit) jobs.pop_back();
  return jobs;
}

int64_t JobStore::queue_position(int64_t seq) {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?1");
  s.bind(1, seq).step();
  return s.integer(0);
}

int64_t JobStore::active() {
  std::lock_guard lock(mutex_);
  Stmt s(db_, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'in_progress')");
  s.step();
  return s.integer(0);
}

std::map<std::string, int64_t> JobStore::counts() {
  std::lock_guard lock(mutex_);
  std::map<std::string, int64_t> c;
  for (const char* name : kStatusNames) c[name] = 0;
  Stmt s(db_, "SELECT status, COUNT(*) FROM jobs GROUP BY status");
  while (s.step()) c[s.text(0)] = s.integer(1);
  return c;
}

}  // namespace fisdit::serve
