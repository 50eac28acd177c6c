#include <cstdio>
int main() { std::puts("earnserve"); return 0; }
