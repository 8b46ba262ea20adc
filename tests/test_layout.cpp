// The source tree's layering: every include names its folder, and no lower layer includes a higher one.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// Layers from the bottom up. tokenizer and model sit side by side: neither includes the other.
// cuda/ is the CUDA backend, a part of the model layer that lives outside src/.
const std::map<std::string, int> kRank = {
    {"io", 1}, {"tokenizer", 2}, {"model", 2}, {"decode", 3}, {"cli", 4}};

// The layer of a path relative to the repository root ("src/model/x.cpp" -> "model"), "" for
// src/common.h, "?" for anything else. cuda/ belongs to the model layer: it implements
// model/backend.h, and model/backend.cpp is the factory that creates it.
std::string layer_of(const std::string& rel) {
  if (rel == "src/common.h") return "";
  if (rel.rfind("cuda/", 0) == 0) return "model";
  if (rel.rfind("src/", 0) == 0) {
    const std::string rest = rel.substr(4);
    const auto slash = rest.find('/');
    if (slash != std::string::npos && kRank.count(rest.substr(0, slash))) return rest.substr(0, slash);
  }
  return "?";
}

// Every violation in the tree under `root`, one line each: "file: includes "x": why".
std::vector<std::string> layering_violations(const fs::path& root) {
  std::vector<std::string> out;
  const std::regex include_re(R"re(^\s*#\s*include\s+"([^"]+)")re");
  for (const char* top : {"src", "cuda"}) {
    if (!fs::exists(root / top)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / top)) {
      if (!entry.is_regular_file()) continue;
      const std::string ext = entry.path().extension().string();
      if (ext != ".cpp" && ext != ".h" && ext != ".cu" && ext != ".cuh") continue;
      const std::string rel = fs::relative(entry.path(), root).generic_string();
      const std::string from = layer_of(rel);
      const bool in_cuda = rel.rfind("cuda/", 0) == 0;
      std::ifstream in(entry.path());
      std::string line;
      while (std::getline(in, line)) {
        std::smatch m;
        if (!std::regex_search(line, m, include_re)) continue;
        const std::string inc = m[1];
        const std::string what = rel + ": includes \"" + inc + "\": ";
        // Inside cuda/, the backend's own headers are named plainly.
        if (in_cuda && fs::exists(entry.path().parent_path() / inc)) continue;
        std::string target;
        if (inc == "common.h") target = "src/common.h";
        else if (inc.rfind("cuda/", 0) == 0) target = inc;
        else target = "src/" + inc;
        if (!fs::exists(root / target)) {
          out.push_back(what + "not a file under src/ or cuda/ (name its folder: \"model/backend.h\")");
          continue;
        }
        const std::string to = layer_of(target);
        if (to == "?" || from == "?") {
          out.push_back(what + "outside the layer folders");
          continue;
        }
        if (to.empty() || to == from) continue;  // common.h, or the same layer
        if (from.empty() || kRank.at(to) >= kRank.at(from))
          out.push_back(what + "layer '" + (from.empty() ? "common" : from) +
                        "' must not include layer '" + to + "'");
      }
    }
  }
  return out;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string joined(const std::vector<std::string>& lines) {
  std::ostringstream s;
  for (const auto& l : lines) s << l << "\n";
  return s.str();
}

}  // namespace

TEST_CASE("layout: no file of a lower layer includes a file of a higher one") {
  const auto violations = layering_violations(UNMASK_SOURCE_ROOT);
  INFO(joined(violations));
  CHECK(violations.empty());
}

TEST_CASE("layout: the layering check finds upward, sideways and unnamed includes") {
  const fs::path root = fs::temp_directory_path() / "unmask_layout_test";
  fs::remove_all(root);
  write(root / "src/common.h", "");
  write(root / "src/io/config.h", "#include \"common.h\"\n");
  write(root / "src/model/model.h", "#include \"io/config.h\"\n");
  write(root / "src/tokenizer/tokenizer.h", "#include \"io/config.h\"\n");
  write(root / "src/decode/engine.h", "#include \"model/model.h\"\n#include \"tokenizer/tokenizer.h\"\n");
  write(root / "src/cli/main.cpp", "#include \"decode/engine.h\"\n");
  write(root / "cuda/common.cuh", "#include \"model/model.h\"\n");
  write(root / "cuda/x.cu", "#include \"common.cuh\"\n");
  write(root / "src/model/backend.cpp", "#include \"cuda/common.cuh\"\n");
  CHECK(layering_violations(root).empty());

  write(root / "src/io/weights.cpp", "#include \"model/model.h\"\n");            // upward
  write(root / "src/model/synthetic.cpp", "#include \"decode/engine.h\"\n");     // upward
  write(root / "src/tokenizer/chat.cpp", "  #  include \"model/model.h\"\n");  // sideways
  write(root / "src/decode/sampler.cpp", "#include \"model.h\"\n");             // no folder
  const auto v = layering_violations(root);
  INFO(joined(v));
  REQUIRE(v.size() == 4);
  CHECK(joined(v).find("src/io/weights.cpp: includes \"model/model.h\": layer 'io' must not include "
                       "layer 'model'") != std::string::npos);
  CHECK(joined(v).find("src/model/synthetic.cpp") != std::string::npos);
  CHECK(joined(v).find("layer 'tokenizer' must not include layer 'model'") != std::string::npos);
  CHECK(joined(v).find("src/decode/sampler.cpp: includes \"model.h\": not a file") != std::string::npos);
  fs::remove_all(root);
}
