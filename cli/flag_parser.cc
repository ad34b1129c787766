#include "cli/flag_parser.h"

#include <algorithm>
#include <string>
#include <vector>

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

absl::Status Usage(absl::string_view message) {
  return absl::InvalidArgumentError(message);
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
  ParsedArgs parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      parsed.positional.assign(args.begin() + i + 1, args.end());
      if (!takes_command && !parsed.positional.empty()) {
        return Usage(absl::StrCat("unexpected argument \"",
                                  absl::CEscape(parsed.positional.front()),
                                  "\": 'onlyone ", command,
                                  "' takes no command"));
      }
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (!takes_command) {
        return Usage(absl::StrCat("unexpected argument \"", absl::CEscape(arg),
                                  "\""));
      }
      parsed.positional.assign(args.begin() + i, args.end());
      break;
    }

    absl::string_view body(arg);
    body.remove_prefix(arg[1] == '-' ? 2 : 1);
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
    const std::string name = absl::StrReplaceAll(name_text, {{"-", "_"}});
    const std::string shown = absl::StrCat("--", DashedName(name));
    const FlagSpec* spec = FindSpec(accepted, name);
    if (spec == nullptr) {
      if (!name.empty() && FindSpec(known, name) != nullptr) {
        return Usage(absl::StrCat(shown, " is not a flag of 'onlyone ",
                                  command, "'"));
      }
      return Usage(absl::StrCat("unknown flag \"", absl::CEscape(arg), "\""));
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
        return Usage(
            absl::StrCat(shown, " needs a value (", spec->metavar, ")"));
      }
      value = args[++i];
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
