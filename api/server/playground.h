// The playground page served at GET / : api/server/playground.html (plain HTML, CSS and
// JavaScript that talk to this server's API: catalogue search, recommendations, streamed
// completions), compiled into the binary at build time by api/server/embed_page.cmake, so that
// the page works offline and needs no files next to the binary.
// Immutable data; thread-safe.
#pragma once

#include <string_view>

namespace earnserve::api {

// The whole page (UTF-8).
std::string_view playground_html();

}  // namespace earnserve::api
