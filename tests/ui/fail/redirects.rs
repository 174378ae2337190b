// Redirects cmd! does not support, or whose shell meaning it does not model.
use leadpipe::cmd;

fn main() {
    let _ = cmd!("make 2>&1 > build.log");
    let _ = cmd!("cat << EOF");
    let _ = cmd!("diff <(ls a) <(ls b)");
    let _ = cmd!("echo oops >&2");
    let _ = cmd!("exec 3> fd3.txt");
    let _ = cmd!("make > a.log > b.log");
    let _ = cmd!("make &> all.log 2> err.log");
    let _ = cmd!("sort | uniq < words.txt");
    let _ = cmd!("make >");
    let _ = cmd!("cat <<<");
}
