#pragma once
// Checks of recorded forwards (Backend::capture, Backend::graphs) that the CPU tests run on the
// CPU backend's recording (the body run again at each replay) and the GPU tests on CUDA graphs.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/wan/loader.h"

namespace fisdit::test {

// Backend::graphs() on for a scope, as it was after.
class GraphsOn {
 public:
  explicit GraphsOn(Backend& b, bool on = true) : b_(b), was_(b.graphs()) { b.set_graphs(on); }
  ~GraphsOn() { b_.set_graphs(was_); }
  GraphsOn(const GraphsOn&) = delete;
  GraphsOn& operator=(const GraphsOn&) = delete;

 private:
  Backend& b_;
  bool was_;
};

inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// A recording runs nothing; each replay runs the ops again on the tensors' contents of then, and
// counts their FLOPs once. (Small integers: exact in bf16, as the GPU's GEMM reads them.)
inline void check_capture_and_replay(Backend& backend) {
  constexpr int64_t n = 16;
  Tensor x0 = Tensor::zeros({1, n}), y0 = Tensor::zeros({1, n}), w0 = Tensor::zeros({n, n});
  for (int64_t i = 0; i < n; ++i) {
    x0.f32()[i] = static_cast<float>(i + 1);
    y0.f32()[i] = static_cast<float>(10 * (i + 1));
    w0.f32()[i * n + i] = i == n - 1 ? 2.0f : 1.0f;  // diag(1, ..., 1, 2)
  }
  Tensor x = backend.upload(x0, DType::F32), y = backend.upload(y0, DType::F32);
  const Tensor w = backend.upload(w0, backend.weight_dtype());
  Tensor z = backend.empty({1, n});
  backend.linear(x, w, nullptr, z);  // the first run of the shape (it may choose an algorithm)
  backend.flops().reset();
  const Backend::GraphCounts counts = backend.graph_counts();
  const Backend::Graph g = backend.capture([&backend, x, y, w, z]() mutable {
    backend.add_scaled(x, y, 0.5f);  // x += y / 2
    backend.linear(x, w, nullptr, z);
  });
  ASSERT_TRUE(g);
  EXPECT_EQ(backend.flops().total(), 0.0) << "a recording counts what it runs when replayed";
  EXPECT_EQ(backend.download(x).to_vector(), x0.to_vector()) << "the recording ran the ops";
  // x_i after r replays from x_i = start: start + 5 r (i + 1); z_i = x_i w_ii.
  const auto expect = [&](float start, int replays) {
    const std::vector<float> xv = backend.download(x).to_vector(),
                             zv = backend.download(z).to_vector();
    for (int64_t i = 0; i < n; ++i) {
      const float xi =
          start * static_cast<float>(i + 1) + 5.0f * replays * static_cast<float>(i + 1);
      EXPECT_EQ(xv[static_cast<size_t>(i)], xi) << i;
      EXPECT_EQ(zv[static_cast<size_t>(i)], xi * (i == n - 1 ? 2.0f : 1.0f)) << i;
    }
  };
  backend.replay(g);
  expect(1.0f, 1);
  backend.replay(g);
  expect(1.0f, 2);
  backend.copy(backend.upload(Tensor::zeros({1, n}), DType::F32), x);
  backend.replay(g);  // the same tensors, their contents as they are now
  expect(0.0f, 1);
  EXPECT_EQ(backend.flops().total(), 3 * 2.0 * n * n);
  EXPECT_EQ(backend.graph_counts().recorded, counts.recorded + 1);
  EXPECT_EQ(backend.graph_counts().replayed, counts.replayed + 3);
  EXPECT_THROW(backend.replay(Backend::Graph{}), Error);
}

// Forwards of a tiny Wan DiT with graphs on give the op-by-op forward's output bit for bit, and
// count the same FLOPs: six Euler-like steps with fresh latents and timesteps, FIS-sparse and dense
// steps in turn, two texts per step (guidance); then a third text, which takes a text slot over.
// Each of the four kinds of forward (sparse or dense, either text) runs once, is recorded on its
// second forward and replayed from then on.
inline void check_graphed_forwards(Backend& backend, const std::string& model,
                                   models::Precision precision = models::Precision::Default) {
  const auto file = SafetensorsFile::open(model);
  const std::unique_ptr<wan::WanDiT> dit = wan::load_dit(wan::open_model(model), backend);
  dit->set_precision(precision);
  const int layers = dit->config().num_layers;
  const Tensor context = file->tensor_f32("input.context");
  const Tensor x_in = file->tensor_f32("input.x"), t_in = file->tensor_f32("input.t");
  const auto scaled = [](const Tensor& t, float s, float add) {
    Tensor out = t.clone();
    for (int64_t i = 0; i < out.numel(); ++i) out.f32()[i] = out.f32()[i] * s + add;
    return out;
  };
  std::vector<models::TextEmbedding> texts;
  for (float s : {1.0f, -0.5f, 0.25f})
    texts.push_back(dit->embed_text(models::TextContext(scaled(context, s, 0.1f * s))));
  accel::FisConfig fis;
  fis.name = "custom";
  fis.stride = 3;
  fis.head = 1;
  fis.tail = 1;
  const accel::FisPlan plan(fis, layers, 2, static_cast<int>(x_in.dim(1)));

  GraphsOn on(backend);
  const auto forward = [&](const Tensor& x, const Tensor& t, const models::TextEmbedding& text,
                           bool open, bool graphs, double& flops) {
    backend.set_graphs(graphs);
    const double before = backend.flops().total();
    const Tensor out = backend.download(
        dit->forward(x, models::Timestep{t, std::nullopt}, text, {&plan, open, {}, {}}));
    flops = backend.flops().total() - before;
    return out;
  };
  const auto check = [&](int step, size_t text, const std::string& what) {
    const Tensor x = backend.upload(scaled(x_in, 1.0f - 0.1f * step, 0.05f * step), DType::F32);
    const Tensor t = scaled(t_in, 1.0f - 0.08f * step, 0.0f);  // frame 0's t = 0 stays 0 (TI2V)
    const bool open = step % 2 == 0;
    double f_graph = 0, f_ops = 0;
    const Tensor graphed = forward(x, t, texts[text], open, true, f_graph);
    const Tensor ops = forward(x, t, texts[text], open, false, f_ops);
    EXPECT_TRUE(same_bits(graphed, ops))
        << what << " " << models::precision_name(precision) << ": step " << step << ", text "
        << text << ", rel L2 " << rel_l2(graphed, ops);
    EXPECT_EQ(f_graph, f_ops) << what << ": step " << step;
  };
  // What the DiT counted so far: forwards run op by op, replayed; texts copied into a slot. None
  // failed to be recorded, and all of the four kinds were recorded.
  const auto counts = [&](int64_t runs, int64_t replayed, int64_t copies, const char* when) {
    const GraphCache::Stats s = dit->graph_stats();
    EXPECT_EQ(s.failed, 0) << when;
    EXPECT_EQ(s.runs, runs) << when;
    EXPECT_EQ(s.recorded, 4) << when;
    EXPECT_EQ(s.replayed, replayed) << when;
    EXPECT_EQ(dit->graph_text_copies(), copies) << when;
  };
  for (int step = 0; step < 6; ++step)
    for (size_t text = 0; text < 2; ++text) check(step, text, model);
  counts(4, 4, 2, "two texts (each copied into its slot once)");
  // A third text takes the slot used least recently (text 0's), copied in: the graphs of that
  // slot are replayed at once with it.
  check(6, 2, model + ", a third text");
  check(7, 2, model + ", a third text");
  check(8, 0, model + ", the first text again");
  counts(4, 7, 4, "a third text");
  // A text that is gone (the last request's) gives its slot to the next one, though another slot
  // was used less recently: text 0 (slot 1, just used) is replaced by a fourth text, which takes
  // slot 1; text 2 keeps slot 0.
  texts[0] = dit->embed_text(models::TextContext(scaled(context, 2.0f, -0.3f)));
  check(9, 0, model + ", a fourth text in the slot of one that is gone");
  check(10, 2, model + ", the third text again");
  counts(4, 9, 5, "a fourth text");
}

// Requests one after the other, each embedding its prompt again and dropping it after (as
// `generate --repeat` and the server do): a request's text takes the slot of the last one's,
// which is gone, so from the second request on every forward is replayed.
inline void check_requests_replay_the_last_ones(Backend& backend, const std::string& model) {
  const auto file = SafetensorsFile::open(model);
  const std::unique_ptr<wan::WanDiT> dit = wan::load_dit(wan::open_model(model), backend);
  const models::TextContext context(file->tensor_f32("input.context"));
  const Tensor x = backend.upload(file->tensor_f32("input.x"), DType::F32);
  const models::Timestep time{file->tensor_f32("input.t"), std::nullopt};
  GraphsOn on(backend);
  Tensor first;
  for (int request = 0; request < 3; ++request) {
    const models::TextEmbedding text = dit->embed_text(context);
    for (int step = 0; step < 2; ++step) {
      const Tensor out = backend.download(dit->forward(x, time, text, {}));
      if (!first.defined()) first = out;
      EXPECT_TRUE(same_bits(out, first)) << "request " << request << ", step " << step;
    }
  }
  const GraphCache::Stats s = dit->graph_stats();
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.runs, 1);      // the first request's first step
  EXPECT_EQ(s.recorded, 1);  // its second (replayed as it is recorded)
  EXPECT_EQ(s.replayed, 4);  // the later requests' steps
  EXPECT_EQ(dit->graph_text_copies(), 3);
}

}  // namespace fisdit::test
