// Command incluster is a client-go program run inside a pod by the kube
// tests: it authenticates with the pod's projected service-account token
// (rest.InClusterConfig) and says who it is and what it sees.
//
// With "watch FILE" it instead prints FILE's content each time it changes,
// forever: the image has no shell, so a mounted ConfigMap that changes
// under it was updated with no process run in the pod.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "watch" {
		watch(os.Args[2])
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		fmt.Println("in-cluster config:", err)
		os.Exit(1)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Println("client:", err)
		os.Exit(1)
	}
	ns, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ssr, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		fmt.Println("self subject review:", err)
		os.Exit(1)
	}
	pods, err := cs.CoreV1().Pods(strings.TrimSpace(string(ns))).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println("list pods:", err)
		os.Exit(1)
	}
	fmt.Printf("in-cluster ok: user=%s pods=%d\n", ssr.Status.UserInfo.Username, len(pods.Items))
}

func watch(file string) {
	last := "\x00"
	for {
		b, err := os.ReadFile(file)
		cur := string(b)
		if err != nil {
			cur = "error: " + err.Error()
		}
		if cur != last {
			fmt.Printf("content: %s\n", cur)
			last = cur
		}
		time.Sleep(200 * time.Millisecond)
	}
}
