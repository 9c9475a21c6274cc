// Recorded forwards on CUDA graphs (Backend::capture, FISDIT_CUDA_GRAPHS): what a recording runs
// and refuses, and the tiny Wan DiTs' recorded forwards against their op-by-op ones, bit for bit
// (the checks the CPU tests run on the CPU backend's recording, tests/models/wan_graph_test.cpp).
#include <gtest/gtest.h>

#include <string>

#include "../models/graph_checks.h"
#include "cuda_test_util.h"

namespace fisdit {
namespace {

std::string fixture(const char* name) { return std::string(FISDIT_TEST_DATA) + "/wan/" + name; }

TEST(CudaGraphs, ARecordingRunsNothingAndEachReplayRunsTheOps) {
  FISDIT_REQUIRE_GPU();
  test::check_capture_and_replay(gpu);
}

// Work a graph cannot hold throws from capture naming it, nothing is recorded, and the stream
// runs ops as before.
TEST(CudaGraphs, WhatARecordingCannotHoldIsRefusedAndTheStreamStaysUsable) {
  FISDIT_REQUIRE_GPU();
  Tensor x = gpu.upload(Tensor::from_vector({1, 2, 3, 4}, {1, 4}), DType::F32);
  const auto refused = [&](const std::function<void()>& body, const char* says) {
    try {
      gpu.capture(body);
      ADD_FAILURE() << "recorded work that needs " << says;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("while a graph is recorded"), std::string::npos)
          << e.what();
    }
  };
  refused([&] { gpu.download(x); }, "copying to host memory");
  refused(
      [&] {
        gpu.upload(Tensor::from_vector({1, 2}, {1, 2}), DType::F32);
      },
      "copying host memory");
  // A GEMM shape never run before: its algorithm is chosen by timing (bf16 rows: cuBLASLt's GEMM;
  // a few fp32 rows would take the own kernel, which has nothing to choose).
  const Tensor w = gpu.upload(test::randn({24, 40}, 1), gpu.weight_dtype());
  refused(
      [&] {
        Tensor in = gpu.empty({37, 40}, DType::BF16), out = gpu.empty({37, 24});
        gpu.linear(in, w, nullptr, out);
      },
      "choosing a GEMM algorithm");
  gpu.add_scaled(x, x, 1.0f);
  EXPECT_EQ(gpu.download(x).to_vector(), (std::vector<float>{2, 4, 6, 8}));
}

TEST(CudaGraphs, NewRequestsReplayTheGraphsOfTheLastOne) {
  FISDIT_REQUIRE_GPU();
  test::check_requests_replay_the_last_ones(gpu, fixture("dit_ti2v_tiny.safetensors"));
}

// FISDIT_CUDA_GRAPHS turns them on for a new backend; a value other than 0 or 1 is an error
// naming it.
TEST(CudaGraphs, TheVariableSetsANewBackendsDefault) {
  FISDIT_REQUIRE_GPU();
  {
    test::EnvScope env("FISDIT_CUDA_GRAPHS", nullptr);
    EXPECT_FALSE(make_cuda_backend()->graphs());
  }
  {
    test::EnvScope env("FISDIT_CUDA_GRAPHS", "1");
    EXPECT_TRUE(make_cuda_backend()->graphs());
  }
  test::EnvScope env("FISDIT_CUDA_GRAPHS", "yes");
  try {
    make_cuda_backend();
    ADD_FAILURE() << "FISDIT_CUDA_GRAPHS=yes was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("FISDIT_CUDA_GRAPHS"), std::string::npos) << e.what();
  }
}

TEST(CudaGraphs, WanForwardsRecordedGiveTheOpByOpOutputs) {
  FISDIT_REQUIRE_GPU();
  for (const char* model : {"dit_t2v_tiny.safetensors", "dit_ti2v_tiny.safetensors"})
    test::check_graphed_forwards(gpu, fixture(model));
  for (const models::Precision p : {models::Precision::Fp8Gemm, models::Precision::Fp8})
    test::check_graphed_forwards(gpu, fixture("dit_t2v_tiny.safetensors"), p);
}

}  // namespace
}  // namespace fisdit
