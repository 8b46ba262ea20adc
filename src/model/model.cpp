// The LLaDA-family forward pass over Backend ops; the only copy of the model's math.
#include "model/model.h"

#include <algorithm>

#include "common.h"
#include "model/rng.h"

namespace unmask {

void ForwardBatch::clear() {
  tokens.clear();
  positions.clear();
  seq_start.assign(1, 0);
  out_rows.clear();
  use_cache = false;
  block_size = 0;
  cache_rows.clear();
  kv_begin.clear();
  kv_end.clear();
}

int32_t ForwardBatch::add_cached_sequence(const std::vector<int32_t>& canvas, int32_t first,
                                          int32_t last, int32_t slot_row, int32_t kv_length) {
  if (seq_start.empty()) seq_start.push_back(0);
  use_cache = true;
  const int32_t start = n_tokens();
  for (int32_t p = first; p < last; p++) {
    tokens.push_back(canvas[p]);
    positions.push_back(p);
    cache_rows.push_back(slot_row + p);
  }
  seq_start.push_back(n_tokens());
  kv_begin.push_back(slot_row);
  kv_end.push_back(slot_row + (kv_length < 0 ? static_cast<int32_t>(canvas.size()) : kv_length));
  return start;
}

int32_t ForwardBatch::add_sequence(const std::vector<int32_t>& canvas, int32_t length) {
  if (seq_start.empty()) seq_start.push_back(0);
  const int32_t first = n_tokens();
  const size_t n = length < 0 ? canvas.size() : static_cast<size_t>(length);
  tokens.insert(tokens.end(), canvas.begin(), canvas.begin() + static_cast<std::ptrdiff_t>(n));
  for (size_t i = 0; i < n; i++) positions.push_back(static_cast<int32_t>(i));
  seq_start.push_back(n_tokens());
  return first;
}

namespace {
Tensor place(Backend& backend, const Tensor& t, size_t& bytes, bool resident) {
  if (!t.data) return t;
  bytes += t.n_bytes();
  return resident ? t : backend.upload_weight(t);
}
}  // namespace

Model::Model(Backend& backend, const ModelConfig& config, const ModelWeights& host, bool resident)
    : backend_(backend), config_(config) {
  auto upload = [&](const Tensor& t, size_t& bytes) { return place(backend, t, bytes, resident); };
  weights_.embedding = upload(host.embedding, weight_bytes_);
  weights_.final_norm = upload(host.final_norm, weight_bytes_);
  weights_.head = host.head.data == host.embedding.data ? weights_.embedding
                                                        : upload(host.head, weight_bytes_);
  for (const LayerWeights& l : host.layers) {
    LayerWeights d;
    d.attn_norm = upload(l.attn_norm, weight_bytes_);
    d.wq = upload(l.wq, weight_bytes_);
    d.wk = upload(l.wk, weight_bytes_);
    d.wv = upload(l.wv, weight_bytes_);
    d.bq = upload(l.bq, weight_bytes_);
    d.bk = upload(l.bk, weight_bytes_);
    d.bv = upload(l.bv, weight_bytes_);
    d.wo = upload(l.wo, weight_bytes_);
    d.ffn_norm = upload(l.ffn_norm, weight_bytes_);
    d.w_gate = upload(l.w_gate, weight_bytes_);
    d.w_up = upload(l.w_up, weight_bytes_);
    d.w_down = upload(l.w_down, weight_bytes_);
    d.q_norm = upload(l.q_norm, weight_bytes_);
    d.k_norm = upload(l.k_norm, weight_bytes_);
    d.router = upload(l.router, weight_bytes_);
    for (size_t e = 0; e < l.experts.gate.size(); e++) {
      d.experts.gate.push_back(upload(l.experts.gate[e], weight_bytes_));
      d.experts.up.push_back(upload(l.experts.up[e], weight_bytes_));
      d.experts.down.push_back(upload(l.experts.down[e], weight_bytes_));
    }
    weights_.layers.push_back(d);
    // The router runs in fp32 (both modeling files): the bias is widened once, whatever its dtype.
    float* bias = nullptr;
    if (l.expert_bias.data) {
      std::vector<float> widened(static_cast<size_t>(l.expert_bias.numel()));
      if (resident) {  // synthetic models keep every weight in backend memory
        std::vector<char> raw(l.expert_bias.n_bytes());
        backend.download(raw.data(), l.expert_bias.data, raw.size());
        widen_to_f32(raw.data(), l.expert_bias.dtype, widened.size(), widened.data());
      } else {
        widen_to_f32(l.expert_bias.data, l.expert_bias.dtype, widened.size(), widened.data());
      }
      bias = static_cast<float*>(backend.alloc(widened.size() * sizeof(float)));
      backend.upload(bias, widened.data(), widened.size() * sizeof(float));
      weight_bytes_ += widened.size() * sizeof(float);
    }
    expert_bias_.push_back(bias);
  }
}

Model::~Model() {
  release();
  for (float* b : expert_bias_)
    if (b) backend_.free(b);
  for (Tensor& t : cache_k_) backend_.free(t.data);
  for (Tensor& t : cache_v_) backend_.free(t.data);
}

void Model::release() {
  for (Tensor* t : {&x_, &normed_, &q_, &k_, &v_, &attn_, &proj_, &gate_, &up_, &picked_, &logits_,
                    &router_logits_, &moe_out_}) {
    if (t->data) backend_.free(t->data);
    t->data = nullptr;
  }
  for (int32_t** p : {&d_tokens_, &d_positions_, &d_seq_start_, &d_out_rows_, &d_cache_rows_,
                      &d_kv_begin_, &d_kv_end_, &d_expert_ids_}) {
    if (*p) backend_.free(*p);
    *p = nullptr;
  }
  if (d_expert_weights_) backend_.free(d_expert_weights_);
  d_expert_weights_ = nullptr;
  cap_tokens_ = cap_out_ = cap_seqs_ = 0;
}

void Model::release_buffers() {
  release();
  for (Tensor& t : cache_k_) backend_.free(t.data);
  for (Tensor& t : cache_v_) backend_.free(t.data);
  cache_k_.clear();
  cache_v_.clear();
  cache_rows_cap_ = 0;
  buffers_generation_++;
}

void Model::reserve(int32_t max_tokens, int32_t max_out_rows, int32_t max_seqs) {
  max_tokens = std::max(max_tokens, 1);
  max_out_rows = std::max(max_out_rows, 1);
  max_seqs = std::max(max_seqs, 1);
  if (max_tokens <= cap_tokens_ && max_out_rows <= cap_out_ && max_seqs <= cap_seqs_) return;
  max_tokens = std::max(max_tokens, cap_tokens_);
  max_out_rows = std::max(max_out_rows, cap_out_);
  max_seqs = std::max(max_seqs, cap_seqs_);
  release();
  const ModelConfig& c = config_;
  auto make = [&](int64_t rows, int64_t cols) {
    Tensor t;
    t.rows = rows;
    t.cols = cols;
    t.data = backend_.alloc(static_cast<size_t>(rows * cols) * sizeof(float));
    return t;
  };
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  x_ = make(max_tokens, c.d_model);
  normed_ = make(max_tokens, c.d_model);
  q_ = make(max_tokens, q_dim);
  k_ = make(max_tokens, kv_dim);
  v_ = make(max_tokens, kv_dim);
  attn_ = make(max_tokens, q_dim);
  proj_ = make(max_tokens, c.d_model);
  const int64_t hidden = std::max(c.mlp_hidden, c.moe.shared_hidden);
  gate_ = make(max_tokens, hidden);
  up_ = make(max_tokens, hidden);
  if (c.moe.n_experts > 0) {
    router_logits_ = make(max_tokens, c.moe.n_experts);
    moe_out_ = make(max_tokens, c.d_model);
    const size_t slots = static_cast<size_t>(max_tokens * c.moe.top_k);
    d_expert_ids_ = static_cast<int32_t*>(backend_.alloc(slots * sizeof(int32_t)));
    d_expert_weights_ = static_cast<float*>(backend_.alloc(slots * sizeof(float)));
  }
  picked_ = make(max_out_rows, c.d_model);
  logits_ = make(max_out_rows, c.vocab_size);
  d_tokens_ = static_cast<int32_t*>(backend_.alloc(max_tokens * sizeof(int32_t)));
  d_positions_ = static_cast<int32_t*>(backend_.alloc(max_tokens * sizeof(int32_t)));
  d_seq_start_ = static_cast<int32_t*>(backend_.alloc((max_seqs + 1) * sizeof(int32_t)));
  d_out_rows_ = static_cast<int32_t*>(backend_.alloc(max_out_rows * sizeof(int32_t)));
  d_cache_rows_ = static_cast<int32_t*>(backend_.alloc(max_tokens * sizeof(int32_t)));
  d_kv_begin_ = static_cast<int32_t*>(backend_.alloc(max_seqs * sizeof(int32_t)));
  d_kv_end_ = static_cast<int32_t*>(backend_.alloc(max_seqs * sizeof(int32_t)));
  cap_tokens_ = max_tokens;
  buffers_generation_++;
  cap_out_ = max_out_rows;
  cap_seqs_ = max_seqs;
}

void Model::reserve_cache(int32_t rows) {
  if (rows <= cache_rows_cap_) return;
  // Growing keeps the rows already cached: a server grows the cache while other requests' keys
  // and values sit in it (slots keep their row offsets, so the old rows are copied as they are).
  const int64_t kv_dim = config_.n_kv_heads * config_.head_dim;
  std::vector<Tensor> old_k = std::move(cache_k_), old_v = std::move(cache_v_);
  cache_k_.clear();
  cache_v_.clear();
  for (int64_t l = 0; l < config_.n_layers; l++) {
    for (auto [cache, old] : {std::pair{&cache_k_, &old_k}, std::pair{&cache_v_, &old_v}}) {
      Tensor t;
      t.rows = rows;
      t.cols = kv_dim;
      t.data = backend_.alloc(t.n_bytes());
      if (!old->empty()) {
        const Tensor& before = (*old)[static_cast<size_t>(l)];
        backend_.copy(t.data, before.data, before.n_bytes());
        backend_.free(before.data);
      }
      cache->push_back(t);
    }
  }
  cache_rows_cap_ = rows;
  buffers_generation_++;
}

Tensor Model::forward(const ForwardBatch& batch) {
  const ModelConfig& c = config_;
  const int32_t n = batch.n_tokens(), n_out = static_cast<int32_t>(batch.out_rows.size());
  UNMASK_CHECK(n > 0 && batch.n_seqs() > 0, "empty forward batch");
  reserve(n, n_out, batch.n_seqs());

  backend_.upload(d_tokens_, batch.tokens.data(), n * sizeof(int32_t));
  backend_.upload(d_positions_, batch.positions.data(), n * sizeof(int32_t));
  backend_.upload(d_seq_start_, batch.seq_start.data(), batch.seq_start.size() * sizeof(int32_t));
  if (n_out > 0) backend_.upload(d_out_rows_, batch.out_rows.data(), n_out * sizeof(int32_t));

  AttentionLayout layout;
  layout.q_start = d_seq_start_;
  layout.kv_start = d_seq_start_;
  layout.n_seqs = batch.n_seqs();
  for (int32_t s = 0; s < layout.n_seqs; s++)
    layout.max_q_len = std::max(layout.max_q_len, batch.seq_start[s + 1] - batch.seq_start[s]);
  layout.max_kv_len = layout.max_q_len;
  layout.block_size = batch.block_size;
  layout.q_positions = d_positions_;
  if (batch.use_cache) {
    for (int32_t s = 0; s < layout.n_seqs; s++) {
      UNMASK_CHECK(batch.kv_end[s] <= cache_rows_cap_, "KV cache slot beyond the reserved cache");
      layout.max_kv_len = std::max(layout.max_kv_len, batch.kv_end[s] - batch.kv_begin[s]);
    }
    backend_.upload(d_cache_rows_, batch.cache_rows.data(), n * sizeof(int32_t));
    backend_.upload(d_kv_begin_, batch.kv_begin.data(), layout.n_seqs * sizeof(int32_t));
    backend_.upload(d_kv_end_, batch.kv_end.data(), layout.n_seqs * sizeof(int32_t));
    layout.kv_start = d_kv_begin_;
    layout.kv_end = d_kv_end_;
  }

  // Views of the first n rows of each buffer.
  Tensor x = x_.row_slice(0, n), normed = normed_.row_slice(0, n);
  Tensor q = q_.row_slice(0, n), k = k_.row_slice(0, n), v = v_.row_slice(0, n);
  Tensor attn = attn_.row_slice(0, n), proj = proj_.row_slice(0, n);
  Tensor gate = gate_.row_slice(0, n), up = up_.row_slice(0, n);
  const float eps = static_cast<float>(c.rms_eps), theta = static_cast<float>(c.rope_theta);
  const int head_dim = static_cast<int>(c.head_dim), rotary_dim = static_cast<int>(c.rotary_dim);
  // Per-head views for qk-norm: [tokens * heads, head_dim].
  auto heads = [head_dim](Tensor t) {
    t.rows = t.rows * t.cols / head_dim;
    t.cols = head_dim;
    return t;
  };
  MoeRouter router;
  router.score = c.moe.sigmoid_scores ? RouterScore::Sigmoid : RouterScore::Softmax;
  router.n_experts = static_cast<int>(c.moe.n_experts);
  router.top_k = static_cast<int>(c.moe.top_k);
  router.n_group = static_cast<int>(c.moe.n_group);
  router.topk_group = static_cast<int>(c.moe.topk_group);
  router.bias_in_weights = c.moe.bias_in_weights;
  router.renormalize = c.moe.renormalize;
  router.scale = static_cast<float>(c.moe.routed_scale);
  Tensor router_logits = c.moe.n_experts > 0 ? router_logits_.row_slice(0, n) : Tensor{};
  Tensor moe_out = c.moe.n_experts > 0 ? moe_out_.row_slice(0, n) : Tensor{};

  // The embedding and the layers form one step the backend may record and replay (CUDA graphs):
  // their launches depend only on these numbers, as the buffers stay put between reallocations
  // (counted by buffers_generation_) and the index arrays' contents were uploaded above.
  uint64_t key = buffers_generation_;
  for (int64_t part : {int64_t{n}, int64_t{layout.n_seqs}, int64_t{layout.max_q_len},
                       int64_t{layout.max_kv_len}, int64_t{batch.use_cache}, int64_t{batch.block_size}})
    key = splitmix64(key ^ static_cast<uint64_t>(part));
  auto layers = [&] {
    backend_.embed(d_tokens_, weights_.embedding, x);
    for (size_t layer = 0; layer < weights_.layers.size(); layer++) {
      const LayerWeights& l = weights_.layers[layer];
      // h = x + Wo · Attn(rope(Wq n), rope(Wk n), Wv n), n = RMSNorm(x)
      backend_.rmsnorm(x, l.attn_norm, eps, normed);
      backend_.matmul(normed, l.wq, &l.bq, q);
      backend_.matmul(normed, l.wk, &l.bk, k);
      backend_.matmul(normed, l.wv, &l.bv, v);
      if (c.qk_norm) {  // per head, one weight shared by the heads, before RoPE
        Tensor q_heads = heads(q), k_heads = heads(k);
        backend_.rmsnorm(q_heads, l.q_norm, eps, q_heads);
        backend_.rmsnorm(k_heads, l.k_norm, eps, k_heads);
      }
      backend_.rope(q, d_positions_, head_dim, rotary_dim, theta);
      backend_.rope(k, d_positions_, head_dim, rotary_dim, theta);
      Tensor keys = k, values = v;
      if (batch.use_cache) {
        // Fresh rows overwrite their cache rows; attention then reads each request's whole slot,
        // stale rows included (the prefix/dual-cache approximation).
        backend_.scatter_rows(k, d_cache_rows_, cache_k_[layer]);
        backend_.scatter_rows(v, d_cache_rows_, cache_v_[layer]);
        keys = cache_k_[layer];
        values = cache_v_[layer];
      }
      backend_.attention(q, keys, values, layout, static_cast<int>(c.n_heads),
                         static_cast<int>(c.n_kv_heads), head_dim, attn);
      backend_.matmul(attn, l.wo, nullptr, proj);
      backend_.add(x, proj);
      // y = h + W_down (silu(W_gate m) * W_up m), m = RMSNorm(h); on MoE layers y = h + the
      // routed experts' weighted sum + the shared expert (the SwiGLU weights, when present).
      backend_.rmsnorm(x, l.ffn_norm, eps, normed);
      if (!l.experts.gate.empty()) {
        backend_.matmul(normed, l.router, nullptr, router_logits);
        backend_.moe_route(router_logits, expert_bias_[layer], router, d_expert_ids_, d_expert_weights_);
        backend_.moe_experts(normed, d_expert_ids_, d_expert_weights_, router.top_k, l.experts, moe_out);
        backend_.add(x, moe_out);
      }
      if (l.w_gate.data) {
        Tensor g = gate.row_slice(0, n), u = up.row_slice(0, n);
        g.cols = u.cols = l.w_gate.rows;  // the dense or the shared expert's width
        backend_.matmul(normed, l.w_gate, nullptr, g);
        backend_.matmul(normed, l.w_up, nullptr, u);
        backend_.swiglu(g, u, g);
        backend_.matmul(g, l.w_down, nullptr, proj);
        backend_.add(x, proj);
      }
    }
  };
  if (!backend_.replay_step(key)) {
    const bool recording = backend_.begin_step(key);
    try {
      layers();
    } catch (...) {
      if (recording) backend_.abort_step();
      throw;
    }
    if (recording && !backend_.end_step(key)) layers();  // not recorded, so nothing ran yet
  }

  // The output head only for the rows the sampler asked for (outside the recorded step: the
  // number of rows changes at every step).
  Tensor logits = logits_.row_slice(0, n_out);
  if (n_out == 0) return logits;
  Tensor picked = picked_.row_slice(0, n_out);
  backend_.gather_rows(x, d_out_rows_, picked);
  backend_.rmsnorm(picked, weights_.final_norm, eps, picked);
  // Rows past vocab_size are padding in published checkpoints: never candidates.
  backend_.matmul(picked, weights_.head.row_slice(0, c.vocab_size), nullptr, logits);
  return logits;
}

double Model::forward_flops(const ForwardBatch& batch) const {
  const ModelConfig& c = config_;
  const double n = batch.n_tokens();
  const double q_dim = static_cast<double>(c.n_heads * c.head_dim);
  const double kv_dim = static_cast<double>(c.n_kv_heads * c.head_dim);
  const double attention_per_token = c.d_model * (q_dim + 2 * kv_dim) + q_dim * c.d_model;
  double mlp_per_layer_token = 0;  // summed over the layers
  for (int64_t layer = 0; layer < c.n_layers; layer++) {
    const bool moe = c.moe.n_experts > 0 && c.moe.layer_is_moe[static_cast<size_t>(layer)];
    mlp_per_layer_token += moe ? c.d_model * (c.moe.n_experts + 3.0 * c.moe.top_k * c.moe.expert_hidden +
                                              3.0 * c.moe.shared_hidden)
                               : 3.0 * c.d_model * c.mlp_hidden;
  }
  double attention = 0;  // QK^T and PV: 2 * queries * keys * q_dim multiply-adds per sequence
  for (int32_t s = 0; s + 1 < static_cast<int32_t>(batch.seq_start.size()); s++) {
    const double queries = batch.seq_start[s + 1] - batch.seq_start[s];
    const double keys = batch.use_cache ? batch.kv_end[s] - batch.kv_begin[s] : queries;
    attention += 2.0 * queries * keys * q_dim;
  }
  const double head = static_cast<double>(batch.out_rows.size()) * c.d_model * c.vocab_size;
  return 2.0 * (c.n_layers * (n * attention_per_token + attention) + n * mlp_per_layer_token + head);
}

}  // namespace unmask
