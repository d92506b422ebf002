fn main() {
    println!("shardgate: under construction");
}
