// Command nonewprivs is the program of the conformance suite's NoNewPrivs
// image: installed setuid root, it prints the effective uid it runs with,
// 0 when the kernel let the setuid bit act and the caller's uid when
// no_new_privs stopped it, as the suite's own nonewprivs image does.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
