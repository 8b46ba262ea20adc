// man/unmask.1 documents every long option that `unmask --help` and each subcommand's --help show.
#include <doctest/doctest.h>

#include <regex>
#include <set>

#include "fixtures.h"

using unmask::test::run_unmask;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The man page as a reader sees it: roff's escaped hyphens and font switches removed.
std::string man_text() {
  std::string roff = read_text(UNMASK_MAN_PAGE);
  std::string out;
  for (size_t i = 0; i < roff.size(); i++) {
    if (roff[i] == '\\' && i + 1 < roff.size() && roff[i + 1] == '-') {
      out += '-';
      i++;
    } else if (roff[i] == '\\' && i + 2 < roff.size() && roff[i + 1] == 'f') {
      i += 2;  // \fB, \fI, \fR, \fP
    } else {
      out += roff[i];
    }
  }
  return out;
}

std::set<std::string> long_options(const std::string& help) {
  std::set<std::string> out;
  static const std::regex option(R"(--[a-z][a-z0-9-]*)");
  for (auto it = std::sregex_iterator(help.begin(), help.end(), option); it != std::sregex_iterator(); ++it)
    out.insert(it->str());
  return out;
}

}  // namespace

TEST_CASE("the manual names every long option of every subcommand") {
  const std::string man = man_text();
  size_t checked = 0;
  for (const std::string sub : {"", "generate", "batch", "bench", "info"}) {
    const auto r = run_unmask(sub + " --help");
    CAPTURE(sub);
    REQUIRE(r.exit_code == 0);
    const std::set<std::string> options = long_options(r.out);
    CHECK(options.count("--help") == 1);
    for (const std::string& o : options) {
      // A name followed by a non-name character, so --steps does not pass for --steps-per-block.
      static const std::string name_chars = "abcdefghijklmnopqrstuvwxyz0123456789-";
      bool found = false;
      for (size_t at = man.find(o); at != std::string::npos && !found; at = man.find(o, at + 1)) {
        const size_t end = at + o.size();
        found = end >= man.size() || name_chars.find(man[end]) == std::string::npos;
      }
      CHECK_MESSAGE(found, "man/unmask.1 does not document " << o << " of 'unmask " << sub << "'");
      checked++;
    }
  }
  CHECK(checked > 40);
  // Each subcommand has its own section, and the exit codes are all there.
  for (const char* section : {".SH GENERATE", ".SH BATCH", ".SH BENCH", ".SH INFO", ".SH ENVIRONMENT",
                              ".SH EXIT STATUS", ".SH FILES", ".SH EXAMPLES"})
    CHECK_MESSAGE(man.find(section) != std::string::npos, "missing section " << section);
  for (const char* code : {".B 0\n", ".B 1\n", ".B 2\n", ".B 3\n", ".B 4\n", ".B 130\n"})
    CHECK(man.find(code) != std::string::npos);
  for (const char* env : {"UNMASK_MODEL", "NO_COLOR", "OMP_NUM_THREADS"}) CHECK(man.find(env) != std::string::npos);
}
