// unmask info on the MoE families: experts, routing, the dense/MoE layer pattern, rotary_dim,
// qk-norm, block-causal attention, total and active parameters, and the loop's defaults.
#include <doctest/doctest.h>

#include "fixtures.h"

using unmask::test::fixture;
using unmask::test::load_json;
using unmask::test::run_unmask;
using json = nlohmann::json;

TEST_CASE("info on tiny-llada2: experts, routing, layer pattern, total and active parameters, LLaDA2's loop") {
  const auto r = run_unmask("info -m " + fixture("tiny-llada2") + " --format json");
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  const json c = load_json(fixture("tiny-llada2/config.json"));

  CHECK(j["family"] == "llada2");
  CHECK(j["experts"] == c["num_experts"]);
  CHECK(j["experts_per_token"] == c["num_experts_per_tok"]);
  CHECK(j["expert_groups"] == c["n_group"]);
  CHECK(j["expert_groups_kept"] == c["topk_group"]);
  CHECK(j["expert_hidden_size"] == c["moe_intermediate_size"]);
  CHECK(j["shared_expert_hidden_size"] ==
        c["moe_intermediate_size"].get<int64_t>() * c["num_shared_experts"].get<int64_t>());
  const std::string router = j["router"];
  CHECK(router.rfind("sigmoid, group-limited", 0) == 0);
  CHECK(router.find("expert bias for the choice only") != std::string::npos);
  CHECK(router.find("scaled by 2.5") != std::string::npos);
  CHECK(j["mlp_layers"] == "0: dense, 1-2: MoE");  // first_k_dense_replace 1 of 3 layers
  CHECK(j["rotary_dim"] == 12);                     // head_dim 24 x partial_rotary_factor 0.5
  CHECK(j["qk_norm"] == true);
  CHECK(j["block_causal"] == true);

  // By hand from the config: d 64, H 4, K 2, hd 24, L 3 (1 dense), F 96, E 8, k 2, M 32, S 1,
  // V 416, untied head, qk-norm, no biases but the f32 expert bias [E] of each MoE layer.
  const int64_t d = c["hidden_size"], H = c["num_attention_heads"], K = c["num_key_value_heads"],
                hd = c["head_dim"], L = c["num_hidden_layers"], F = c["intermediate_size"],
                E = c["num_experts"], k = c["num_experts_per_tok"], M = c["moe_intermediate_size"],
                S = c["num_shared_experts"], V = c["vocab_size"];
  const int64_t dense_layers = c["first_k_dense_replace"], moe_layers = L - dense_layers;
  const int64_t attention = d + (H + 2 * K) * hd * d + 2 * hd + H * hd * d + d;  // norms, qkv, qk-norm, dense
  const int64_t dense_mlp = 3 * d * F;
  const int64_t router_and_bias = E * d + E;
  const int64_t expert = 3 * d * M, shared = 3 * d * M * S;
  const int64_t total = V * d + L * attention + dense_layers * dense_mlp +
                        moe_layers * (router_and_bias + E * expert + shared) + d + V * d;
  const int64_t active = d + L * attention + dense_layers * dense_mlp +
                         moe_layers * (router_and_bias + k * expert + shared) + d + V * d;
  CHECK(total == 239200);
  CHECK(active == 138912);
  CHECK(j["parameters"] == total);
  CHECK(j["active_parameters"] == active);

  const json& g = j["generation_defaults"];
  CHECK(g["alg"] == "llada2");
  CHECK(g["block_length"] == 32);
  CHECK(g["steps"] == 32);
  CHECK(g["steps_per"] == "block");
  CHECK(g["threshold"] == 0.95);
  CHECK(g["cache"] == "block");

  // The text form: one fact a line.
  const auto text = run_unmask("info -m " + fixture("tiny-llada2"));
  REQUIRE(text.exit_code == 0);
  for (const std::string line :
       {"family: llada2\n", "experts: 8\n", "experts_per_token: 2\n", "expert_groups: 4\n",
        "expert_groups_kept: 2\n", "shared_expert_hidden_size: 32\n", "mlp_layers: 0: dense, 1-2: MoE\n",
        "rotary_dim: 12\n", "qk_norm: true\n", "block_causal: true\n", "parameters: 239200\n",
        "active_parameters: 138912\n", "\"alg\":\"llada2\"", "\"threshold\":0.95", "\"cache\":\"block\""}) {
    CAPTURE(line);
    CHECK(text.out.find(line) != std::string::npos);
  }
}

TEST_CASE("info on tiny-llada-moe: softmax routing with its bias in the weights, the llada loop") {
  const auto r = run_unmask("info -m " + fixture("tiny-llada-moe") + " --format json");
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  CHECK(j["family"] == "llada_moe");
  CHECK(j["experts"] == 8);
  CHECK(j["experts_per_token"] == 2);
  CHECK(j["expert_groups"] == 1);
  CHECK(j["expert_hidden_size"] == 16);
  CHECK(j["shared_expert_hidden_size"] == 16);
  CHECK(j["router"] == "softmax, expert bias added to the scores and weights, top 2, weights not renormalised");
  CHECK(j["mlp_layers"] == "0: dense, 1-2: MoE");  // moe_layer_freq [0, 1, 1]
  CHECK(j["block_causal"] == false);
  CHECK(j["qk_norm"] == true);
  CHECK(j["rotary_dim"] == 12);
  // d 48, 4 heads of 12 (2 KV), 3 layers, dense width 32, 8 experts of 16 (top 2), shared 16, V 416.
  const int64_t d = 48, hd = 12, attention = d + (4 + 2 * 2) * hd * d + 2 * hd + 4 * hd * d + d;
  const int64_t active = d + 3 * attention + 3 * d * 32 + 2 * (8 * d + 8 + 2 * 3 * d * 16 + 3 * d * 16) + d + 416 * d;
  CHECK(j["active_parameters"] == active);
  CHECK(j["active_parameters"].get<int64_t>() < j["parameters"].get<int64_t>());
  const json& g = j["generation_defaults"];
  CHECK(g["alg"] == "llada");
  CHECK(g["steps_per"] == "answer");
  CHECK(g["threshold"] == nullptr);
  CHECK(g["cache"] == "none");
}

TEST_CASE("info on a dense model: no expert facts, rotary_dim = head_dim") {
  const auto r = run_unmask("info -m " + fixture("tiny-f32-gqa") + " --format json");
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  CHECK(!j.contains("experts"));
  CHECK(!j.contains("active_parameters"));
  CHECK(j["rotary_dim"] == j["head_dim"]);
  CHECK(j["qk_norm"] == false);
  CHECK(j["block_causal"] == false);
}
