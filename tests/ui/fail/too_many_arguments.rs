use rohrpost::prelude::*;

#[rohrpost_handler("ping")]
async fn ping(
    _a: Request,
    _b: Request,
    _c: Request,
    _d: Request,
    _e: Request,
    _f: Request,
    _g: Request,
    _h: Request,
    _i: Request,
    _j: Request,
    _k: Request,
    _l: Request,
    _m: Request,
) {
}

fn main() {}
