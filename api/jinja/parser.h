// Syntax tree and parser for the Jinja subset of chat templates: {{ expressions }} with Jinja's
// operator precedence, filters, tests, calls, subscripts and slices, literals; statements if /
// elif / else, for (with unpacking, inline if, else, loop.*), set (name, namespace attribute,
// block), macro, break / continue, and transformers' {% generation %} block.
// Unknown tags, filters and tests are parse errors naming the line. A parsed Template owns its
// tree, is immutable and may be rendered from many threads at once.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api/jinja/value.h"
#include "core/status.h"

namespace earnserve::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // literal
    kName,       // name
    kList,       // children: items
    kTuple,      // children: items
    kDict,       // children: key, value, key, value, ...
    kGetAttr,    // children[0].name
    kGetItem,    // children[0][children[1]]
    kSlice,      // children[0][children[1]:children[2]:children[3]], absent parts are null
    kCall,       // children[0](children[1..], keyword)
    kFilter,     // children[0] | name(children[1..], keyword)
    kTest,       // children[0] is [not] name(children[1..], keyword)
    kUnary,      // op children[0]; op is "not", "-" or "+"
    kBinary,     // children[0] op children[1]; op is an arithmetic operator, "~", "and", "or"
    kCompare,    // children[0] ops[0] children[1] ops[1] children[2] ...
    kCondition,  // children[0] if children[1] else children[2] (null: undefined)
  };

  Kind kind;
  int line = 0;
  std::string name;      // name, attribute, filter or test name, or the operator
  bool negated = false;  // kTest: "is not"
  Json literal;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
  std::vector<std::string> ops;  // kCompare
};

struct Stmt;
using StmtList = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kPrint,     // {{ expr }}
    kIf,        // conditions[i] -> bodies[i]; bodies.back() is the else branch when longer
    kFor,       // for targets in expr [if condition]: bodies[0], else bodies[1]
    kSet,       // set targets (or namespace_name.attribute) = expr
    kSetBlock,  // set targets[0] %} bodies[0] {% endset
    kMacro,     // macro name(targets with defaults) bodies[0]
    kBreak,
    kContinue,
    kScope,  // a body rendered in place ({% generation %})
  };

  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;                // kFor's inline filter
  std::vector<ExprPtr> conditions;  // kIf
  std::vector<StmtList> bodies;
  std::vector<std::string> targets;  // kFor / kSet names; kMacro parameter names
  std::vector<ExprPtr> defaults;     // kMacro: parameter defaults, null when none
  std::string namespace_name;        // kSet on "ns.attribute": targets[0] is the attribute
};

struct Template {
  StmtList body;
};

// Parses template source text. Errors name the line: "chat template line 3: unknown filter 'x'".
StatusOr<std::shared_ptr<const Template>> parse_template(const std::string& source);

}  // namespace earnserve::jinja
