//! Hostile: fills /state with files with long names, then holds many open listings of it, each
//! of which the host reads whole into its own memory. Arguments: files (default 10,000),
//! listings (default 500).
fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("number"));
    let files = args.next().unwrap_or(10_000);
    let listings = args.next().unwrap_or(500);
    let dir = std::path::Path::new("/state/names");
    std::fs::create_dir_all(dir).expect("mkdir");
    for i in 0..files {
        let name = format!("{i:0>200}");
        if !dir.join(&name).exists() {
            std::fs::File::create(dir.join(name)).expect("create");
        }
    }
    println!("created {files} files");
    let mut held = Vec::new();
    for i in 0..listings {
        held.push(std::fs::read_dir(dir).expect("read_dir"));
        if i % 50 == 0 {
            println!("holding {} listings", held.len());
        }
    }
    println!("holding {} listings", held.len());
    std::hint::black_box(&held);
}
