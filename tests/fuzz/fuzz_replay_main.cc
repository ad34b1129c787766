// main() for a fuzz target without libFuzzer: runs LLVMFuzzerTestOneInput()
// once for each file given, or for each regular file in a directory given,
// so that a target's corpus (tests/fuzz/corpus/TARGET/, seeds and inputs
// that once failed) is a regression test of every build, the sanitizer
// builds included. A property that fails aborts, which fails the test.
//
// Usage: TARGET_replay FILE_OR_DIRECTORY...

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool IsDirectory(const std::string& path) {
  struct stat status;
  return stat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode);
}

// The files to run: `path` itself, or the files in it, sorted.
std::vector<std::string> InputsOf(const std::string& path) {
  if (!IsDirectory(path)) return {path};
  std::vector<std::string> inputs;
  if (DIR* directory = opendir(path.c_str())) {
    while (const struct dirent* entry = readdir(directory)) {
      const std::string file = path + "/" + entry->d_name;
      if (entry->d_name[0] != '.' && !IsDirectory(file)) {
        inputs.push_back(file);
      }
    }
    closedir(directory);
  }
  std::sort(inputs.begin(), inputs.end());
  return inputs;
}

}  // namespace

int main(int argc, char** argv) {
  int ran = 0;
  for (int i = 1; i < argc; ++i) {
    for (const std::string& input : InputsOf(argv[i])) {
      std::ifstream file(input, std::ios::binary);
      if (!file) {
        fprintf(stderr, "%s: cannot read\n", input.c_str());
        return 1;
      }
      std::stringstream bytes;
      bytes << file.rdbuf();
      const std::string data = bytes.str();
      fprintf(stderr, "%s (%zu bytes)\n", input.c_str(), data.size());
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()),
                             data.size());
      ++ran;
    }
  }
  // An empty or missing corpus would make this test pass without running
  // anything.
  if (ran == 0) {
    fprintf(stderr, "no inputs found in the paths given\n");
    return 1;
  }
  fprintf(stderr, "%d inputs passed\n", ran);
  return 0;
}
