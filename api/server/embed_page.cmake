# Writes OUTPUT, a C++ source defining earnserve::api::playground_html() as the text of INPUT
# (api/server/playground.html) in a raw string literal. Run at build time by api/CMakeLists.txt.
file(READ "${INPUT}" page)
set(delimiter "es_page")
string(FIND "${page}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains )${delimiter}\" and cannot be embedded")
endif()
file(WRITE "${OUTPUT}"
  "// Generated from ${INPUT} by embed_page.cmake; do not edit.\n"
  "#include \"api/server/playground.h\"\n\n"
  "namespace earnserve::api {\n\n"
  "std::string_view playground_html() {\n"
  "  static constexpr char kPage[] = R\"${delimiter}(${page})${delimiter}\";\n"
  "  return {kPage, sizeof(kPage) - 1};\n"
  "}\n\n"
  "}  // namespace earnserve::api\n")
