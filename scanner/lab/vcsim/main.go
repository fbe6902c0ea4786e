// vcsim for the avscan lab: govmomi's vCenter simulator (SOAP + the REST tagging endpoint) on a
// given loopback address. Built by scanner/lab/vcsim (GO111MODULE=off, Debian's govmomi source).
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // REST: /rest/com/vmware/cis (tagging)
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "host:port to serve on")
	machines := flag.Int("vm", 2, "VMs per host and per cluster")
	flag.Parse()
	model := simulator.VPX()
	model.Machine = *machines
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	model.Service.Listen = &url.URL{Host: *listen}
	model.Service.RegisterEndpoints = true
	server := model.Service.NewServer()
	fmt.Printf("VCSIM_URL=%s\n", server.URL)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Close()
	model.Remove()
}
