// Renders a parsed Jinja template (api/jinja/parser.h) against a set of global variables, with
// Jinja's scoping: a for loop body gets a fresh scope each iteration, if blocks share their
// enclosing scope, namespace() objects are the way out of a loop.
// Errors name the template line ("chat template line 7: unsupported operand types for +: ...").
// Stateless; each call owns its scopes, so one Template may be rendered from many threads.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "api/jinja/parser.h"
#include "api/jinja/value.h"
#include "core/status.h"

namespace earnserve::jinja {

StatusOr<std::string> render_template(const Template& tmpl,
                                      const std::vector<std::pair<std::string, Value>>& globals);

}  // namespace earnserve::jinja
