// The job table of fisdit serve: arrival order, the state changes that race (cancel against
// claim), recovery after a process that stopped mid-job, paging.
#include "serve/job_store.h"

#include <gtest/gtest.h>

#include "../io/io_test_util.h"

namespace fisdit::serve {
namespace {

// A queued job `id` submitted at `at`, in `store`.
void add_queued(JobStore& store, const std::string& id, double at) {
  Job j;
  j.id = id;
  j.created_at = at;
  j.request = {{"prompt", id}};
  j.steps = 4;
  store.insert(j);
}

TEST(JobStore, RunsJobsInArrivalOrderAndCancelWinsOnlyBeforeTheEnd) {
  iotest::TempDir dir;
  JobStore store(dir.file("jobs.sqlite"));
  for (const char* id : {"a", "b", "c"}) add_queued(store, id, 1);
  EXPECT_EQ(store.active(), 3);
  ASSERT_EQ(store.next_queued()->id, "a");
  EXPECT_EQ(store.queue_position(store.get("c")->seq), 2);
  ASSERT_TRUE(store.claim("a", 2));
  EXPECT_FALSE(store.claim("a", 2)) << "a job is claimed once";
  EXPECT_EQ(store.next_queued()->id, "b");
  // A queued job cancelled before the worker claims it is never run.
  ASSERT_TRUE(store.cancel("b", "by test", 3));
  EXPECT_FALSE(store.claim("b", 3));
  EXPECT_EQ(store.next_queued()->id, "c");
  // Progress is recorded while running, and the end is recorded once.
  store.set_progress("a", 40, "denoise", 2, 4, {{"text_encode", 0.5}});
  Job a = *store.get("a");
  EXPECT_EQ(a.status, JobStatus::InProgress);
  EXPECT_EQ(a.progress, 40);
  EXPECT_EQ(a.stage, "denoise");
  EXPECT_EQ(a.step, 2);
  EXPECT_DOUBLE_EQ(a.seconds["text_encode"].get<double>(), 0.5);
  ASSERT_TRUE(store.finish("a", JobStatus::Completed, "", "videos/a.mp4", {{"total", 1.0}}, 4));
  EXPECT_FALSE(store.finish("a", JobStatus::Failed, "late", "", {}, 5));
  EXPECT_FALSE(store.cancel("a", "too late", 5)) << "a completed job cannot be cancelled";
  a = *store.get("a");
  EXPECT_EQ(a.status, JobStatus::Completed);
  EXPECT_EQ(a.progress, 100);
  EXPECT_EQ(a.output, "videos/a.mp4");
  EXPECT_EQ(a.stage, "");
  ASSERT_TRUE(a.completed_at.has_value());
  // A running job cancelled: the worker's finish is then refused and the cancel stands.
  ASSERT_TRUE(store.claim("c", 6));
  ASSERT_TRUE(store.cancel("c", "by test", 7));
  EXPECT_FALSE(store.finish("c", JobStatus::Completed, "", "videos/c.mp4", {}, 8));
  EXPECT_EQ(store.get("c")->status, JobStatus::Cancelled);
  EXPECT_EQ(store.get("c")->error, "by test");
  const auto counts = store.counts();
  EXPECT_EQ(counts.at("completed"), 1);
  EXPECT_EQ(counts.at("cancelled"), 2);
  EXPECT_EQ(counts.at("queued"), 0);
  EXPECT_EQ(counts.at("failed"), 0);
  EXPECT_EQ(store.active(), 0);
  store.remove("a");
  EXPECT_FALSE(store.get("a").has_value());
}

TEST(JobStore, AReopenedStoreFailsTheJobThatWasRunningAndKeepsTheRest) {
  iotest::TempDir dir;
  {
    JobStore store(dir.file("jobs.sqlite"));
    for (const char* id : {"done", "running", "waiting"}) add_queued(store, id, 1);
    ASSERT_TRUE(store.claim("done", 1));
    ASSERT_TRUE(store.finish("done", JobStatus::Completed, "", "videos/done.mp4", {}, 2));
    ASSERT_TRUE(store.claim("running", 3));
    store.set_progress("running", 50, "denoise", 2, 4, {});
  }  // the process "stops" here with a job in progress
  JobStore store(dir.file("jobs.sqlite"));
  EXPECT_EQ(store.recover("interrupted: test", 9), std::vector<std::string>{"running"});
  const Job running = *store.get("running");
  EXPECT_EQ(running.status, JobStatus::Failed);
  EXPECT_EQ(running.error, "interrupted: test");
  EXPECT_EQ(running.stage, "");
  EXPECT_EQ(store.get("done")->status, JobStatus::Completed);
  EXPECT_EQ(store.get("done")->output, "videos/done.mp4");
  EXPECT_EQ(store.next_queued()->id, "waiting") << "a queued job runs after a restart";
  EXPECT_TRUE(store.recover("again", 10).empty());
}

TEST(JobStore, ListsNewestFirstInPages) {
  iotest::TempDir dir;
  JobStore store(dir.file("jobs.sqlite"));
  for (int i = 0; i < 5; ++i) add_queued(store, "j" + std::to_string(i), i);
  bool more = false;
  std::vector<std::string> seen;
  std::optional<std::string> after;
  for (int page = 0; page < 10; ++page) {
    const std::vector<Job> jobs = store.list(2, after, &more);
    for (const Job& j : jobs) seen.push_back(j.id);
    if (!more) break;
    after = jobs.back().id;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"j4", "j3", "j2", "j1", "j0"}));
  EXPECT_EQ(store.list(5, std::nullopt, &more).size(), 5u);
  EXPECT_FALSE(more);
}

TEST(JobStore, AFileThatIsNotADatabaseIsAnErrorNamingIt) {
  iotest::TempDir dir;
  iotest::write_bytes(dir.file("jobs.sqlite"), std::string(4096, 'x'));
  try {
    JobStore store(dir.file("jobs.sqlite"));
    FAIL() << "opened a file of garbage";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("jobs.sqlite"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fisdit::serve
