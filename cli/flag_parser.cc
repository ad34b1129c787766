#include "cli/flag_parser.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace onlyone::cli {
namespace {

const FlagSpec* FindSpec(absl::Span<const FlagSpec> specs,
                         absl::string_view name) {
  for (const FlagSpec& spec : specs) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const ShortFlag* FindShort(absl::Span<const ShortFlag> flags, char letter) {
  for (const ShortFlag& flag : flags) {
    if (flag.letter == letter) return &flag;
  }
  return nullptr;
}

absl::Status Usage(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// The edit distance between two short strings, counting a swap of two
// neighbours as one edit ("wiat" is one from "wait"): the optimal string
// alignment distance.
size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1,
                                     std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitution = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + substitution});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// "; did you mean --wait?" when an accepted flag is close to `name` (at
// most a third of its letters changed, and at least one may be); "" when
// none is.
std::string DidYouMean(absl::string_view name, const CommandSyntax& syntax) {
  if (name.empty()) return "";
  const FlagSpec* best = nullptr;
  size_t best_distance = std::max<size_t>(1, name.size() / 3) + 1;
  for (const FlagSpec& spec : syntax.accepted) {
    const size_t distance = EditDistance(name, spec.name);
    if (distance < best_distance) {
      best = &spec;
      best_distance = distance;
    }
  }
  if (best == nullptr) return "";
  return absl::StrCat("; did you mean --", DashedName(best->name), "?");
}

// The reason part of a ParseFrom error ("Illegal value 'x' specified for
// flag 'wait'; REASON"), or a reason from the flag's type.
std::string ParseErrorReason(const absl::CommandLineFlag& flag,
                             absl::string_view error) {
  if (size_t separator = error.find("; ");
      separator != absl::string_view::npos) {
    return std::string(error.substr(separator + 2));
  }
  if (flag.IsOfType<bool>()) return "expected true or false";
  if (flag.IsOfType<int>()) return "expected an integer";
  return "";
}

}  // namespace

bool ParsedArgs::Given(absl::string_view name) const {
  return std::find(given.begin(), given.end(), name) != given.end();
}

std::string DashedName(absl::string_view name) {
  return absl::StrReplaceAll(name, {{"_", "-"}});
}

absl::StatusOr<ParsedArgs> ParseArgs(absl::Span<const std::string> args,
                                     absl::string_view command,
                                     absl::Span<const FlagSpec> accepted,
                                     absl::Span<const FlagSpec> known,
                                     bool takes_command) {
  CommandSyntax syntax;
  syntax.command = command;
  syntax.accepted = accepted;
  syntax.known = known;
  syntax.takes_command = takes_command;
  return ParseArgs(args, syntax);
}

absl::StatusOr<ParsedArgs> ParseArgs(absl::Span<const std::string> args,
                                     const CommandSyntax& syntax) {
  ParsedArgs parsed;
  // The flag whose value the previous argument was, for a stray word's
  // message: {"--wait", "10"}.
  std::pair<std::string, std::string> last_value;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    std::pair<std::string, std::string> took_value;
    absl::Cleanup remember = [&] { last_value = std::move(took_value); };
    if (arg == "--") {
      parsed.positional.assign(args.begin() + i + 1, args.end());
      if (!syntax.takes_command && !parsed.positional.empty()) {
        return Usage(absl::StrCat("unexpected argument \"",
                                  absl::CEscape(parsed.positional.front()),
                                  "\": 'onlyone ", syntax.command,
                                  "' takes no command"));
      }
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (!syntax.takes_command) {
        return Usage(absl::StrCat("unexpected argument \"", absl::CEscape(arg),
                                  "\""));
      }
      if (std::find(args.begin() + i + 1, args.end(), "--") != args.end()) {
        return Usage(absl::StrCat(
            "stray \"", absl::CEscape(arg),
            "\" before \"--\": it is neither a flag nor a flag's value",
            last_value.first.empty()
                ? ""
                : absl::StrCat(" (", last_value.first, " took \"",
                               absl::CEscape(last_value.second),
                               "\" as its value)"),
            "; COMMAND goes after \"--\""));
      }
      parsed.positional.assign(args.begin() + i, args.end());
      break;
    }

    const bool one_dash = arg[1] != '-';
    absl::string_view body(arg);
    body.remove_prefix(one_dash ? 1 : 2);
    if (body == "h" || body == "help") {
      parsed.help = true;
      continue;
    }
    absl::string_view name_text = body;
    absl::string_view value;
    bool has_value = false;
    if (size_t equals = body.find('='); equals != absl::string_view::npos) {
      name_text = body.substr(0, equals);
      value = body.substr(equals + 1);
      has_value = true;
    }
    std::string name = absl::StrReplaceAll(name_text, {{"-", "_"}});
    std::string shown = absl::StrCat("--", DashedName(name));

    // -n, -w 5, -w5: one letter that stands for a flag, unless the letters
    // spell a flag of their own (-wait).
    const ShortFlag* short_flag = nullptr;
    if (one_dash && !body.empty() && !has_value) {
      const ShortFlag* candidate = FindShort(syntax.short_flags, body[0]);
      const bool attached = body.size() > 1 && candidate != nullptr &&
                            candidate->value.empty() &&
                            FindSpec(syntax.accepted, name) == nullptr &&
                            FindSpec(syntax.known, name) == nullptr;
      if (candidate != nullptr && (body.size() == 1 || attached)) {
        short_flag = candidate;
        name = std::string(candidate->flag);
        shown = absl::StrCat("-", std::string(1, candidate->letter));
        if (!candidate->value.empty()) {
          value = candidate->value;
          has_value = true;
        } else if (attached) {
          value = body.substr(1);
          has_value = true;
        }
      }
    }

    const FlagSpec* spec = FindSpec(syntax.accepted, name);
    if (spec == nullptr) {
      const std::string typed(one_dash ? absl::StrCat("-", name_text)
                                       : absl::StrCat("--", name_text));
      for (const FlagHint& hint : syntax.hints) {
        if (hint.spelling == typed) {
          return Usage(absl::StrCat(typed, " is not a flag of 'onlyone ",
                                    syntax.command, "': ", hint.hint));
        }
      }
      if (!name.empty() && FindSpec(syntax.known, name) != nullptr) {
        return Usage(absl::StrCat(shown, " is not a flag of 'onlyone ",
                                  syntax.command, "'"));
      }
      return Usage(absl::StrCat("unknown flag \"", absl::CEscape(arg), "\"",
                                DidYouMean(name, syntax)));
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) {
      return absl::InternalError(
          absl::StrCat("flag ", shown, " is listed but not defined"));
    }
    if (spec->metavar.empty()) {
      if (!has_value) value = "true";
    } else if (!has_value) {
      if (i + 1 >= args.size()) {
        return Usage(absl::StrCat(
            shown, " needs a value (",
            short_flag != nullptr && !short_flag->metavar.empty()
                ? short_flag->metavar
                : spec->metavar,
            ")"));
      }
      value = args[++i];
      took_value = {shown, std::string(value)};
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      std::string reason = ParseErrorReason(*flag, error);
      return Usage(absl::StrCat(shown, ": invalid value \"",
                                absl::CEscape(value), "\"",
                                reason.empty() ? "" : ": ", reason));
    }
    parsed.given.push_back(name);
  }
  return parsed;
}

std::string Wrap(absl::string_view text, int indent, int width) {
  const std::string margin(indent, ' ');
  std::string out;
  for (absl::string_view paragraph : absl::StrSplit(text, '\n')) {
    std::string line = margin;
    bool empty = true;
    for (absl::string_view word :
         absl::StrSplit(paragraph, ' ', absl::SkipEmpty())) {
      if (!empty && static_cast<int>(line.size() + 1 + word.size()) > width) {
        absl::StrAppend(&out, line, "\n");
        line = margin;
        empty = true;
      }
      absl::StrAppend(&line, empty ? "" : " ", word);
      empty = false;
    }
    absl::StrAppend(&out, empty ? "" : line, "\n");
  }
  return out;
}

std::string FlagsHelp(absl::Span<const FlagSpec> flags) {
  std::string out;
  for (const FlagSpec& spec : flags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(spec.name);
    absl::StrAppend(&out, "  --", DashedName(spec.name),
                    spec.metavar.empty() ? "" : " ", spec.metavar, "\n");
    if (flag == nullptr) continue;
    std::string help = flag->Help();
    std::string default_text(spec.default_text);
    if (default_text.empty()) {
      default_text = flag->DefaultValue();
      if (default_text == "false") default_text.clear();
    }
    if (!default_text.empty()) {
      absl::StrAppend(&help, " (default: ", default_text, ")");
    }
    absl::StrAppend(&out, Wrap(help, 6));
  }
  return out;
}

}  // namespace onlyone::cli
