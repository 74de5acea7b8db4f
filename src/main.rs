fn main() {
    std::process::exit(flux::run(std::env::args_os()));
}
