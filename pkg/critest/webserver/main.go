// Command webserver is the program of the conformance suite's web server
// images, which stand in for nginx and httpd: it serves a directory over
// HTTP on a port, writes its pid to a file as nginx does, and logs under
// the name it was started as (the specs look for "httpd" in the log).
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	port := flag.Int("port", 80, "TCP port to serve on")
	root := flag.String("root", "/www", "directory to serve")
	pidFile := flag.String("pidfile", "", "file to write the pid to, if set")
	flag.Parse()

	// The name it runs as: nginx's image starts it as "nginx: master
	// process ...", like nginx's own process title.
	name := strings.TrimSuffix(strings.Fields(filepath.Base(os.Args[0]) + " x")[0], ":")
	log.SetPrefix(name + ": ")
	if *pidFile != "" {
		if err := os.MkdirAll(filepath.Dir(*pidFile), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(*pidFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("serving %s on port %d", *root, *port)
	log.Fatal(http.ListenAndServe(fmt.Sprintf(":%d", *port), http.FileServer(http.Dir(*root))))
}
