// unmask serve: the OpenAI-compatible HTTP server's command line, signals and start-up.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/serve_http.h"

namespace unmask {

CLI::App* add_serve_command(CLI::App& app, ServeOptions& o);
// Binds, loads the model (answering 503 meanwhile), serves until SIGINT or SIGTERM, then drains
// within --shutdown-grace and returns 0. Bad options or an unusable port: fail_usage before the
// model loads; a bad model: fail_input.
int run_serve(ServeOptions o);

}  // namespace unmask
